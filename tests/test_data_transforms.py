"""Joint transforms: same geometry for image and mask (checked with a coordinate-encoding
image), masks keep their label values, exact 101 <-> 128 inverses, GPU-style batch versions,
and the errata (bilinear masks, ToTensor on label maps, the re-seeding trick)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as v1
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from segtutor.data import InMemoryDataset
from segtutor.data.datasets import read_label_png
from segtutor.data.transforms import (
    JointResize,
    RandomDihedral,
    RandomLighting,
    batch_lighting,
    batch_random_dihedral,
    batch_random_flip,
    denormalize,
    dihedral,
    dihedral_inverse,
    make_augmentation,
    normalize,
    pad_to_128,
    resize_to,
    unpad_from_128,
)

H, W = 24, 24


def coordinate_pair(h: int = H, w: int = W):
    """Image channels hold each pixel's (row, column); the mask holds row * w + column."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    image = tv_tensors.Image(torch.stack([yy, xx]))
    mask = tv_tensors.Mask((yy * w + xx).long())
    return image, mask


def erode(keep: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood is all True."""
    return (-F.max_pool2d(-keep.float()[None, None], 3, 1, 1))[0, 0] > 0.5


def decode(image: torch.Tensor, w: int = W) -> torch.Tensor:
    return image[0].round().long() * w + image[1].round().long()


@pytest.mark.parametrize(
    "transform",
    [
        v2.RandomHorizontalFlip(1.0),
        v2.RandomVerticalFlip(1.0),
        RandomDihedral(),
        make_augmentation(hflip=0.5, vflip=0.5, dihedral=True),
    ],
)
def test_permutations_move_image_and_mask_identically(transform):
    for seed in range(8):
        torch.manual_seed(seed)
        image, mask = coordinate_pair()
        out_i, out_m = transform(image, mask)
        assert isinstance(out_m, tv_tensors.Mask) and out_m.dtype == torch.int64
        assert torch.equal(decode(out_i), out_m)
        assert torch.equal(out_m.flatten().sort().values, mask.flatten())  # a permutation


@pytest.mark.parametrize(
    "transform",
    [
        make_augmentation(hflip=0.0, degrees=25.0, mask_fill=-1),
        make_augmentation(hflip=0.5, scale=(0.3, 0.8), mask_fill=-1),
        JointResize(37),
    ],
)
def test_resampling_transforms_share_the_geometry(transform):
    for seed in range(5):
        torch.manual_seed(seed)
        image, mask = coordinate_pair()
        out_i, out_m = transform(image, mask)
        # away from the filled corners, where the image blends real pixels with the fill
        keep = erode(out_m >= 0)
        # and where the mask copied an inner source pixel: at the picture's edge the image
        # blends in the zero padding (or clamps) while the mask still copies the edge pixel
        keep &= (out_m // W > 0) & (out_m // W < H - 1) & (out_m % W > 0) & (out_m % W < W - 1)
        got_y, got_x = out_m[keep] // W, out_m[keep] % W  # source pixel the mask copied
        want_y, want_x = out_i[0][keep], out_i[1][keep]  # source point the image sampled
        err = torch.maximum((got_y - want_y).abs(), (got_x - want_x).abs())
        # the mask takes the nearest source pixel of the point that the image interpolates at
        assert err.max() <= 0.5 + 1e-3
        assert keep.sum() > 0.3 * keep.numel()


def test_rotation_fills_mask_with_ignore():
    image, mask = coordinate_pair()
    aug = make_augmentation(hflip=0.0, degrees=30.0)
    filled = 0
    for seed in range(6):
        torch.manual_seed(seed)
        _, out_m = aug(image, tv_tensors.Mask(mask.clamp(max=200)))
        filled += int((out_m == 255).sum())
        assert (out_m[H // 2 - 2 : H // 2 + 2, W // 2 - 2 : W // 2 + 2] != 255).all()  # centre kept
    assert filled > 0


def test_masks_keep_only_their_labels():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.choice([0, 3, 7, 255], size=(40, 40)))
    labels = F.max_pool2d(labels.float()[None, None], 5, 1, 2)[0, 0].long()  # blobs
    image = tv_tensors.Image(torch.rand(3, 40, 40))
    aug = make_augmentation(
        hflip=0.5, vflip=0.5, degrees=20, scale=(0.4, 1.0), size=32, brightness=0.2, contrast=0.2
    )
    for seed in range(10):
        torch.manual_seed(seed)
        _, out = aug(image, tv_tensors.Mask(labels))
        assert out.shape == (32, 32)
        assert set(out.unique().tolist()) <= {0, 3, 7, 255}
    binary = tv_tensors.Mask((torch.rand(40, 40) > 0.5).float())
    _, out = make_augmentation(degrees=20, scale=(0.4, 1.0), mask_fill=0)(image, binary)
    assert set(out.unique().tolist()) <= {0.0, 1.0} and out.dtype == torch.float32


def test_erratum_bilinear_mask_interpolation_invents_labels():
    labels = torch.zeros(20, 20)
    labels[:, 10:] = 3.0
    labels[5:15, 5:15] = 1.0
    # the buggy way: the mask treated as an image, rotated and resized bilinearly
    wrong = TF.rotate_image(labels[None], 17.0, interpolation=v2.InterpolationMode.BILINEAR)
    wrong = F.interpolate(wrong[None], size=(31, 31), mode="bilinear", align_corners=False)[0, 0]
    invented = set(wrong.round().long().unique().tolist()) - {0, 1, 3}
    assert invented, "bilinear should have written values between the labels (e.g. 2)"
    assert ((wrong > 1.2) & (wrong < 2.8)).any()  # a ring of class "2" between 1 and 3
    # the v2 way: the Mask type picks nearest for the same call
    right = TF.rotate(
        tv_tensors.Mask(labels.long()), 17.0, interpolation=v2.InterpolationMode.BILINEAR
    )
    right = resize_to(right, 31, mask=True)
    assert set(right.unique().tolist()) <= {0, 1, 3}


def test_erratum_totensor_scales_label_maps(tmp_path):
    lab = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    Image.fromarray(lab, mode="L").save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as pil:
        wrong = v1.ToTensor()(pil)  # divides by 255: labels become 0, 0.0039, 0.0078, 1.0
        right_v2 = v2.PILToTensor()(pil)
    assert wrong.dtype == torch.float32 and wrong.max() == 1.0
    assert torch.equal(wrong.long()[0], torch.tensor([[0, 0, 0], [1, 0, 0]]))  # classes lost
    assert torch.equal(right_v2[0].long(), torch.from_numpy(lab).long())
    assert torch.equal(
        torch.from_numpy(read_label_png(tmp_path / "m.png")), torch.from_numpy(lab).long()
    )
    # v2.ToDtype with scale=True scales the image and leaves the Mask alone
    img, m = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)(
        tv_tensors.Image(torch.full((1, 2, 3), 255, dtype=torch.uint8)),
        tv_tensors.Mask(torch.from_numpy(lab)),
    )
    assert img.max() == 1.0 and torch.equal(m, torch.from_numpy(lab))


def test_erratum_reseeding_trick_breaks_when_the_pipelines_differ():
    """The old idiom: seed, transform the image; same seed, transform the mask. It only works
    while both pipelines consume the random stream identically: add a colour jitter to the
    image pipeline only and the two rotations no longer match."""
    mask = torch.zeros(1, 32, 32)
    mask[:, 4:14, 3:20] = 1.0  # an off-centre box, so that a rotation moves it
    image = mask.clone()  # the image shows the same box, so aligned outputs agree
    img_pipe = v1.Compose([v1.ColorJitter(brightness=0.3), v1.RandomRotation(40)])
    same_pipe = v1.Compose([v1.RandomRotation(40)])
    mask_pipe = v1.Compose([v1.RandomRotation(40, interpolation=v1.InterpolationMode.NEAREST)])

    def disagreement(pipe, seed):
        torch.manual_seed(seed)
        out_i = pipe(image) > 0.3
        torch.manual_seed(seed)
        out_m = mask_pipe(mask) > 0.5
        return (out_i != out_m).float().sum() / out_m.float().sum().clamp(min=1)

    broken = torch.stack([disagreement(img_pipe, s) for s in range(10)])
    lucky = torch.stack([disagreement(same_pipe, s) for s in range(10)])
    assert broken.mean() > 0.3 and lucky.max() < 0.2
    # the v2 call draws the parameters once for every input
    v2_pipe = v2.Compose([RandomLighting(0.3, 0.0), v2.RandomRotation(40)])
    for seed in range(10):
        torch.manual_seed(seed)
        out_i, out_m = v2_pipe(tv_tensors.Image(image), tv_tensors.Mask(mask[0]))
        assert ((out_i[0] > 0.3) != (out_m > 0.5)).float().sum() < 0.2 * out_m.sum().clamp(min=1)


def test_dihedral_group_and_inverse():
    x = torch.arange(2 * 9.0).reshape(2, 3, 3)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8  # all 8 distinct
    for k in range(8):
        assert torch.equal(dihedral_inverse(dihedral(x, k), k), x)
    assert torch.equal(dihedral(x, 4), x.transpose(-2, -1))
    assert torch.equal(dihedral(x, 1), torch.from_numpy(np.rot90(x.numpy(), 1, axes=(1, 2)).copy()))
    with pytest.raises(ValueError, match="0..7"):
        dihedral(x, 8)


def test_pad_to_128_exact_inverse_and_reflect_reference():
    img = torch.rand(2, 1, 101, 101)
    lab = torch.randint(0, 5, (2, 101, 101))
    lab[0, 0, 0] = 255
    p = pad_to_128(img)
    assert p.shape == (2, 1, 128, 128)
    ref = np.pad(img.numpy(), ((0, 0), (0, 0), (13, 14), (13, 14)), mode="reflect")
    np.testing.assert_array_equal(p.numpy(), ref)
    assert torch.equal(unpad_from_128(p), img)
    pl = pad_to_128(lab)
    assert pl.dtype == torch.int64 and torch.equal(unpad_from_128(pl), lab)
    assert set(pl.unique().tolist()) <= set(lab.unique().tolist())
    assert torch.equal(unpad_from_128(pad_to_128(img, mode="constant")), img)
    assert pad_to_128(img, mode="constant")[..., :13, :].abs().sum() == 0
    with pytest.raises(ValueError, match="mode"):
        pad_to_128(img, mode="wrap")


def test_resize_101_128_101():
    lab = torch.randint(0, 4, (101, 101))
    # nearest-exact up then down returns every pixel: each output centre falls back into its
    # own source pixel because 128/101 > 1
    assert torch.equal(resize_to(resize_to(lab, 128, mask=True), 101, mask=True), lab)
    img = torch.rand(1, 101, 101)
    up = resize_to(img, 128)
    assert up.shape == (1, 128, 128)
    torch.testing.assert_close(
        up, F.interpolate(img[None], size=128, mode="bilinear", align_corners=False)[0]
    )
    back = resize_to(up, 101)
    assert not torch.equal(back, img)  # resizing images is not exactly invertible
    with pytest.raises(TypeError, match="mask=True"):
        resize_to(lab, 128)


def test_lighting_touches_images_only():
    torch.manual_seed(0)
    image, mask = (
        tv_tensors.Image(torch.rand(1, 8, 8) * 0.5 + 0.25),
        tv_tensors.Mask(torch.ones(8, 8)),
    )
    out_i, out_m = RandomLighting(0.2, 0.3)(image, mask)
    assert not torch.equal(out_i, image) and torch.equal(out_m, mask)
    with pytest.raises(ValueError, match="brightness"):
        RandomLighting(brightness=2.0)


def test_batch_lighting_matches_formula():
    x = torch.rand(4, 2, 5, 5)
    g = torch.Generator().manual_seed(0)
    out = batch_lighting(x, brightness=0.1, contrast=0.2, generator=g)
    g = torch.Generator().manual_seed(0)
    c = 1 + 0.2 * (2 * torch.rand((4, 1, 1, 1), generator=g) - 1)
    b = 0.1 * (2 * torch.rand((4, 1, 1, 1), generator=g) - 1)
    for i in range(4):
        mean = x[i].mean(dim=(1, 2), keepdim=True)
        want = ((x[i] - mean) * c[i] + mean + b[i]).clamp(0, 1)
        torch.testing.assert_close(out[i], want)


def test_batch_flip_and_dihedral_agree_with_per_sample_ops():
    img = torch.rand(16, 2, 6, 6)
    msk = torch.randint(0, 3, (16, 6, 6))
    g = torch.Generator().manual_seed(1)
    oi, om = batch_random_flip(img, msk, hflip=0.5, vflip=0.5, generator=g)
    flipped = 0
    for i in range(16):
        candidates = [img[i], img[i].flip(-1), img[i].flip(-2), img[i].flip(-1).flip(-2)]
        j = [torch.equal(oi[i], c) for c in candidates].index(True)
        mcand = [msk[i], msk[i].flip(-1), msk[i].flip(-2), msk[i].flip(-1).flip(-2)]
        assert torch.equal(om[i], mcand[j])
        flipped += j > 0
    assert 4 <= flipped <= 15
    oi, om, k = batch_random_dihedral(img, msk, generator=torch.Generator().manual_seed(2))
    for i in range(16):
        assert torch.equal(oi[i], dihedral(img[i], int(k[i])))
        assert torch.equal(om[i], dihedral(msk[i], int(k[i])))
    assert len(k.unique()) > 3
    with pytest.raises(ValueError, match="must match"):
        batch_random_flip(img, msk[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_ops_on_gpu_match_cpu():
    img = torch.rand(8, 1, 8, 8)
    msk = torch.randint(0, 2, (8, 8, 8))
    g = torch.Generator(device="cuda").manual_seed(0)
    oi, om = batch_random_flip(img.cuda(), msk.cuda(), generator=g)
    assert oi.is_cuda and om.is_cuda
    for i in range(8):
        assert torch.equal(oi[i].cpu(), img[i]) or torch.equal(oi[i].cpu(), img[i].flip(-1))
    out = batch_lighting(img.cuda(), generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.is_cuda and out.shape == img.shape


def test_normalize_round_trip_and_dataset_integration():
    x = torch.rand(3, 4, 4)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    torch.testing.assert_close(denormalize(normalize(x, mean, std), mean, std), x)
    aug = make_augmentation(hflip=1.0, mean=mean, std=std)
    ds = InMemoryDataset(x[None], torch.arange(16).reshape(1, 4, 4), transform=aug)
    xi, yi = ds[0]
    torch.testing.assert_close(xi, normalize(x.flip(-1), mean, std))
    assert torch.equal(yi, torch.arange(16).reshape(4, 4).flip(-1)) and yi.dtype == torch.int64
    with pytest.raises(ValueError, match="both mean and std"):
        make_augmentation(mean=mean)


def test_one_resize_serves_images_masks_and_the_models_logits():
    from segtutor.models import blocks

    assert blocks.resize_to is resize_to  # one function, used by FCN, DeepLab and the heads
    logits = torch.randn(2, 5, 7, 9, requires_grad=True)
    for size in ((14, 18), torch.Size([29, 31])):
        expected = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        assert torch.equal(resize_to(logits, size), expected)
        # a channels_last batch stays channels_last (no copy to [B*C, 1, H, W] and back)
        cl = logits.detach().contiguous(memory_format=torch.channels_last)
        out = resize_to(cl, size)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, expected.detach())
    assert resize_to(logits, (7, 9)) is logits  # already at that size: nothing to resample
    resize_to(logits, (14, 18)).sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    with pytest.raises(TypeError, match="mask=True"):
        resize_to(torch.zeros(1, 1, 4, 4, dtype=torch.long), (4, 4))
