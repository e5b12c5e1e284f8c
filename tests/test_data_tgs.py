"""The Kaggle TGS layout: writing the synthetic copy, reading it back, RLE against train.csv,
clear errors for a missing layout, coverage classes and stratified folds."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from segtutor.data import (
    TGSSaltDataset,
    coverage_class,
    coverage_folds,
    make_tgs_like,
    rle_decode,
    write_tgs_layout,
)

N_TRAIN, N_TEST, SEED = 24, 6, 4


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("tgs")
    write_tgs_layout(root, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, progress=False)
    return root


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_layout_files(layout):
    for rel in ("train.csv", "depths.csv", "sample_submission.csv"):
        assert (layout / rel).is_file()
    assert len(list((layout / "train" / "images").glob("*.png"))) == N_TRAIN
    assert len(list((layout / "train" / "masks").glob("*.png"))) == N_TRAIN
    assert len(list((layout / "test" / "images").glob("*.png"))) == N_TEST
    assert len(list((layout / "test" / "masks").glob("*.png"))) == N_TEST
    assert not list(layout.rglob("*.tmp"))  # atomic writes leave no temp files
    train = _rows(layout / "train.csv")
    assert train[0] == ["id", "rle_mask"] and len(train) == N_TRAIN + 1
    assert _rows(layout / "depths.csv")[0] == ["id", "z"]
    assert len(_rows(layout / "depths.csv")) == N_TRAIN + N_TEST + 1
    sub = _rows(layout / "sample_submission.csv")
    assert sub[0] == ["id", "rle_mask"] and len(sub) == N_TEST + 1
    with Image.open(next((layout / "train" / "images").glob("*.png"))) as im:
        assert im.size == (101, 101) and im.mode == "L"


def test_train_csv_agrees_with_mask_pngs_and_generator(layout):
    data = make_tgs_like(N_TRAIN + N_TEST, seed=SEED)
    for image_id, rle in _rows(layout / "train.csv")[1:]:
        with Image.open(layout / "train" / "masks" / f"{image_id}.png") as im:
            png = (np.asarray(im) > 0).astype(np.uint8)
        # decoded independently of the dataset class: the column-major RLE equals the PNG
        assert np.array_equal(rle_decode(rle), png)
        i = data.ids.index(image_id)
        assert np.array_equal(png, data.masks[i].numpy().astype(np.uint8))
    empties = sum(rle == "" for _, rle in _rows(layout / "train.csv")[1:])
    assert empties == int((data.coverage[:N_TRAIN] == 0).sum())


def test_round_trip_through_dataset(layout):
    data = make_tgs_like(N_TRAIN + N_TEST, seed=SEED)
    ds = TGSSaltDataset(layout, "train")
    assert len(ds) == N_TRAIN and ds.ids == data.ids[:N_TRAIN]
    x, y = ds[3]
    assert x.shape == (1, 101, 101) and x.dtype == torch.float32
    assert y.shape == (101, 101) and y.dtype == torch.float32
    # images are stored as 8-bit PNGs: the round trip quantises to 1/255
    torch.testing.assert_close(x[0], (data.images[3] * 255).round() / 255, atol=1e-6, rtol=0)
    assert torch.equal(y, data.masks[3])
    torch.testing.assert_close(ds.depths, data.depths[:N_TRAIN])
    torch.testing.assert_close(ds.coverage, data.coverage[:N_TRAIN])
    images, masks, depths, ids = ds.arrays()
    assert ids == ds.ids and torch.equal(depths, ds.depths)
    assert images.shape == (N_TRAIN, 1, 101, 101) and torch.equal(masks, data.masks[:N_TRAIN])
    test = TGSSaltDataset(layout, "test")
    assert test.labeled and sorted(test.ids) == sorted(data.ids[N_TRAIN:])
    j = test.ids.index(data.ids[N_TRAIN])
    assert torch.equal(test[j][1], data.masks[N_TRAIN])


def test_unlabeled_test_split_gives_nan_masks(layout, tmp_path):
    import shutil

    shutil.copytree(layout, tmp_path / "kaggle")
    shutil.rmtree(tmp_path / "kaggle" / "test" / "masks")  # as in the real competition
    test = TGSSaltDataset(tmp_path / "kaggle", "test")
    assert not test.labeled and torch.isnan(test[0][1]).all()
    with pytest.raises(ValueError, match="no masks"):
        _ = test.coverage


def test_missing_layout_names_the_file_and_where_data_goes(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        TGSSaltDataset(tmp_path, "train")
    msg = str(err.value)
    assert "train.csv" in msg and "kaggle.com" in msg and "segtutor tgs synth" in msg
    (tmp_path / "train.csv").write_text("id,rle_mask\n")
    (tmp_path / "depths.csv").write_text("id,z\n")
    with pytest.raises(FileNotFoundError, match="images"):
        TGSSaltDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        TGSSaltDataset(tmp_path, "val")


def test_mismatching_rle_is_reported(layout, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(layout, root)
    rows = _rows(root / "train.csv")
    k = next(i for i, r in enumerate(rows) if i > 0 and r[1] and len(r[1].split()) > 2)
    mask = rle_decode(rows[k][1])
    from segtutor.data import rle_encode

    rows[k][1] = rle_encode(mask.T)  # what a row-major encoder would have written
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(ValueError, match=rows[k][0]) as err:
        TGSSaltDataset(root, "train")
    assert "row-major" in str(err.value)
    assert len(TGSSaltDataset(root, "train", check_rle=False)) == N_TRAIN


def test_coverage_class_bins():
    cov = torch.tensor([0.0, 1e-4, 0.1, 0.1001, 0.55, 0.99, 1.0])
    assert coverage_class(cov).tolist() == [0, 1, 1, 2, 6, 10, 10]
    masks = torch.zeros(2, 10, 10)
    masks[1, :3] = 1
    assert coverage_class(masks).tolist() == [0, 3]
    with pytest.raises(ValueError, match="shape"):
        coverage_class(torch.zeros(2, 2, 2, 2))


def test_folds_disjoint_complete_and_stratified():
    rng = np.random.default_rng(0)
    cov = np.where(rng.random(503) < 0.39, 0.0, rng.random(503))
    folds = coverage_folds(torch.from_numpy(cov), k=5, seed=1)
    assert folds.shape == (503,) and folds.dtype == torch.int64
    assert set(folds.tolist()) == set(range(5))  # every image in exactly one fold
    sizes = torch.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    classes = coverage_class(torch.from_numpy(cov))
    for c in classes.unique():
        per_fold = torch.bincount(folds[classes == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1  # each class spread evenly
    assert torch.equal(folds, coverage_folds(torch.from_numpy(cov), k=5, seed=1))
    assert not torch.equal(folds, coverage_folds(torch.from_numpy(cov), k=5, seed=2))
    # a random (unstratified) split is visibly less even, which is why we stratify
    random_folds = torch.from_numpy(np.random.default_rng(1).integers(0, 5, 503))
    spread = max(
        int(
            torch.bincount(random_folds[classes == c], minlength=5).max()
            - torch.bincount(random_folds[classes == c], minlength=5).min()
        )
        for c in classes.unique()
    )
    assert spread > 1
    with pytest.raises(ValueError, match="k must"):
        coverage_folds(torch.from_numpy(cov), k=1)


def test_dataset_folds_method(layout):
    ds = TGSSaltDataset(layout, "train")
    folds = ds.coverage_folds(3, seed=0)
    assert torch.equal(folds, coverage_folds(ds.coverage, 3, 0))
    assert ds.coverage_class.shape == (N_TRAIN,)


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_train"):
        write_tgs_layout(tmp_path, n_train=-1, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_tgs_layout(tmp_path / "file", n_train=1, n_test=0, progress=False)


def test_duplicate_ids_in_train_csv_are_refused(layout, tmp_path):
    import shutil

    root = tmp_path / "dup"
    shutil.copytree(layout, root)
    rows = _rows(root / "train.csv")
    rows.append(rows[3])  # 25 rows naming 24 images
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(
        ValueError, match=f"line {len(rows)}: id '{rows[3][0]}' appears twice \\(first on line 4\\)"
    ):
        TGSSaltDataset(root, "train")


def test_written_files_get_the_umask_mode_like_open(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_tgs_layout(tmp_path / "d", n_train=2, n_test=1, seed=0, progress=False)
        reference = tmp_path / "reference"
        reference.touch()  # what a plain open() gives under the same umask
    finally:
        os.umask(old)
    expected = stat.S_IMODE(reference.stat().st_mode)
    assert expected == 0o644
    written = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert len(written) == 3 + 2 * 2 + 2 * 1  # the csv files, train and test images + masks
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {expected}
