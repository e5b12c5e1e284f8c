"""InMemoryDataset, make_loader, SegmentationDataset (folder pairing, label PNGs, ignore)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segtutor.data import InMemoryDataset, SegmentationDataset, make_loader


def test_in_memory_grey_binary_gets_channel_and_float_mask():
    images = torch.rand(5, 7, 9)
    masks = (torch.rand(5, 7, 9) > 0.5).float()
    ds = InMemoryDataset(images, masks)
    x, y = ds[2]
    assert x.shape == (1, 7, 9) and x.dtype == torch.float32
    assert y.shape == (7, 9) and y.dtype == torch.float32
    assert torch.equal(x[0], images[2]) and torch.equal(y, masks[2])
    assert len(ds) == 5


def test_in_memory_multiclass_long_and_uint8_scaling():
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    masks = torch.randint(0, 4, (3, 4, 4), dtype=torch.uint8)
    x, y = InMemoryDataset(images, masks)[0]
    assert y.dtype == torch.int64
    torch.testing.assert_close(x, images[0].float() / 255)


def test_in_memory_rejects_mismatch():
    with pytest.raises(ValueError, match="must agree"):
        InMemoryDataset(torch.rand(3, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="masks must be"):
        InMemoryDataset(torch.rand(3, 4, 4), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="transform"):
        InMemoryDataset(torch.rand(3, 4, 4), torch.zeros(3, 4, 4), transform=3)


def test_in_memory_transform_is_applied_to_both():
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    masks = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    ds = InMemoryDataset(images, masks, transform=lambda im, m: (im.flip(-1), m.flip(-1)))
    x, y = ds[1]
    assert torch.equal(x[0], images[1].flip(-1)) and torch.equal(y, masks[1].flip(-1))
    assert type(x) is torch.Tensor and type(y) is torch.Tensor


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_make_loader_reproducible_shuffle():
    ds = InMemoryDataset(torch.arange(20.0).reshape(20, 1, 1), torch.zeros(20, 1, 1))
    order = lambda s: torch.cat([x.flatten() for x, _ in make_loader(ds, 4, shuffle=True, seed=s)])
    a, b, c = order(1), order(1), order(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(20))
    plain = torch.cat([x.flatten() for x, _ in make_loader(ds, 4)])
    assert torch.equal(plain, torch.arange(20.0))
    assert len(make_loader(ds, 6, drop_last=True)) == 3


class _NumpyRandom(torch.utils.data.Dataset):
    """Draws from NumPy's global generator: the case that seed_worker exists for."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([np.random.rand()]), torch.zeros(1)


def test_make_loader_workers_draw_different_and_reproducible_numbers():
    first = torch.cat([x for x, _ in make_loader(_NumpyRandom(), 1, num_workers=2, seed=3)])
    again = torch.cat([x for x, _ in make_loader(_NumpyRandom(), 1, num_workers=2, seed=3)])
    # worker 0 takes items 0, 2, 4, 6 and worker 1 takes 1, 3, 5, 7: unseeded forked workers
    # would repeat each other's NumPy numbers
    assert not torch.equal(first[0::2], first[1::2])
    assert torch.equal(first, again)


def test_make_loader_bad_arguments():
    ds = InMemoryDataset(torch.rand(4, 2, 2), torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, 2, num_workers=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_in_memory_on_gpu():
    ds = InMemoryDataset(torch.rand(4, 2, 2), torch.zeros(4, 2, 2), device="cuda")
    x, y = next(iter(make_loader(ds, 2)))
    assert x.is_cuda and y.is_cuda
    with pytest.raises(ValueError, match="num_workers=0"):
        make_loader(ds, 2, num_workers=1)


# ---------------------------------------------------------------- folders of images and masks


def _write_pair(folder, stem, image, mask, palette=False):
    (folder / "images").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    m = Image.fromarray(mask.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        # colours unrelated to the indices: the labels must come from the indices
        m.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
    m.save(folder / "masks" / f"{stem}.png")


def test_segmentation_dataset_pairs_palette_grey_and_ignore(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    lab = rng.integers(0, 3, (6, 5))
    lab[0, :] = 255
    _write_pair(tmp_path, "b", rgb, lab, palette=True)
    _write_pair(tmp_path, "a", rgb[..., 0], lab)
    with Image.open(tmp_path / "masks" / "b.png") as im:
        assert im.mode == "P"  # the file really is a palette PNG
    ds = SegmentationDataset(tmp_path / "images", tmp_path / "masks")
    assert ds.stems == ["a", "b"]
    xa, ya = ds[0]
    xb, yb = ds[1]
    assert xa.shape == (1, 6, 5) and xb.shape == (3, 6, 5)
    torch.testing.assert_close(xb, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    # palette indices, not colours, are the labels; 255 survives as ignore
    assert torch.equal(ya, torch.from_numpy(lab)) and torch.equal(yb, torch.from_numpy(lab))
    assert ya.dtype == torch.int64 and (ya == 255).sum() == 5


def test_segmentation_dataset_lists_unpaired_stems(tmp_path):
    img = np.zeros((4, 4), dtype=np.uint8)
    for stem in ("p1", "p2", "lonely_image"):
        _write_pair(tmp_path, stem, img, img)
    (tmp_path / "masks" / "lonely_image.png").unlink()
    Image.fromarray(img).save(tmp_path / "masks" / "orphan_mask.png")
    with pytest.raises(ValueError) as err:
        SegmentationDataset(tmp_path / "images", tmp_path / "masks")
    assert "lonely_image" in str(err.value) and "orphan_mask" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SegmentationDataset(tmp_path / "nowhere", tmp_path / "masks")


def test_segmentation_dataset_binary(tmp_path):
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1:3, 1:3] = 255  # TGS masks are stored as 0/255 grey
    _write_pair(tmp_path, "x", mask, mask)
    _, y = SegmentationDataset(tmp_path / "images", tmp_path / "masks", binary=True)[0]
    assert y.dtype == torch.float32 and y.sum() == 4 and set(y.unique().tolist()) == {0.0, 1.0}
