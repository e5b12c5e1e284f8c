"""The submission file: written atomically, read back, validated, scored."""

from __future__ import annotations

import os

import pytest
import torch

from segtutor import tgs
from segtutor.metrics import tgs_map


def _random_masks(n: int = 5, size: int = 101, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, size, size, generator=g) > 0.6
    masks[0] = False  # an empty mask: its rle_mask is the empty string
    return masks


def test_submission_round_trip(tmp_path):
    masks = _random_masks()
    ids = [f"id{i:03d}" for i in range(len(masks))]
    path = tgs.write_submission(tmp_path / "submission.csv", ids, masks)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,rle_mask"
    assert lines[1] == "id000,"  # empty mask
    assert len(lines) == len(ids) + 1
    decoded = tgs.validate_submission(path, expected_ids=ids)
    assert list(decoded) == ids
    for i, image_id in enumerate(ids):
        assert (decoded[image_id] == masks[i].numpy()).all()
    # no temporary file is left next to the submission
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_submission_rows_use_the_kaggle_column_major_rle(tmp_path):
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, :, 0] = True  # the first column: pixels 1, 2, 3 in Kaggle's column-major numbering
    path = tgs.write_submission(tmp_path / "s.csv", ["a"], mask)
    assert path.read_text().splitlines()[1] == "a,1 3"


@pytest.mark.parametrize(
    "corruption, message",
    [
        (lambda rows: rows.__setitem__(2, rows[2].split(",")[0] + ",1 2 3"), "line 3: malformed"),
        (
            lambda rows: rows.__setitem__(2, rows[2].split(",")[0] + ",10200 50"),
            "line 3: malformed",
        ),
        (lambda rows: rows.__setitem__(2, rows[2].split(",")[0] + ",a b"), "line 3: malformed"),
        (lambda rows: rows.__setitem__(3, rows[3] + ",extra"), "line 4: 3 fields"),
        (lambda rows: rows.__setitem__(0, "id,mask"), "header"),
        (lambda rows: rows.append(rows[1]), "appears twice"),
        (lambda rows: rows.__setitem__(2, "," + rows[2].split(",")[1]), "empty id"),
    ],
)
def test_validation_rejects_a_corrupted_row(tmp_path, corruption, message):
    masks = _random_masks(4)
    ids = ["a", "b", "c", "d"]
    path = tgs.write_submission(tmp_path / "s.csv", ids, masks)
    rows = path.read_text().splitlines()
    corruption(rows)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(tgs.TGSInputError, match=message):
        tgs.validate_submission(path)


def test_validation_checks_the_expected_ids(tmp_path):
    path = tgs.write_submission(tmp_path / "s.csv", ["a", "b"], _random_masks(2))
    with pytest.raises(tgs.TGSInputError, match="1 missing"):
        tgs.validate_submission(path, expected_ids=["a", "b", "c"])


def test_failed_write_keeps_the_previous_submission(tmp_path, monkeypatch):
    path = tgs.write_submission(tmp_path / "s.csv", ["a"], _random_masks(1))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        tgs.write_submission(path, ["a", "b"], _random_masks(2, seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]


def test_write_submission_rejects_bad_masks(tmp_path):
    with pytest.raises(ValueError, match="binary"):
        tgs.write_submission(tmp_path / "s.csv", ["a"], torch.full((1, 4, 4), 0.7))
    with pytest.raises(ValueError, match="unique"):
        tgs.write_submission(tmp_path / "s.csv", ["a", "a"], _random_masks(2))
    with pytest.raises(ValueError, match="entries"):
        tgs.write_submission(tmp_path / "s.csv", ["a"], _random_masks(2))


def _write_mask_png(path, mask) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.numpy().astype("uint8") * 255).save(path)


def test_evaluate_equals_tgs_map_on_hand_made_layout(tmp_path):
    truth = _random_masks(4, seed=3)
    pred = truth.clone()
    pred[1] = ~pred[1]  # a bad prediction
    pred[2, :50] = False  # a partial one
    ids = ["t0", "t1", "x0", "x1"]
    for i, image_id in enumerate(ids):
        split = "train" if image_id.startswith("t") else "test"
        _write_mask_png(tmp_path / "data" / split / "masks" / f"{image_id}.png", truth[i])
    sub = tgs.write_submission(tmp_path / "s.csv", ids, pred)
    score = tgs.evaluate_submission(tmp_path / "data", sub)
    assert score == pytest.approx(tgs_map(pred, truth))
    assert 0 < score < 1


def test_evaluate_reports_an_id_without_mask(tmp_path):
    _write_mask_png(tmp_path / "data" / "train" / "masks" / "a.png", _random_masks(1)[0])
    sub = tgs.write_submission(tmp_path / "s.csv", ["a", "zz"], _random_masks(2))
    with pytest.raises(tgs.TGSInputError, match="no mask for id 'zz'"):
        tgs.evaluate_submission(tmp_path / "data", sub)


def test_submission_file_mode_symlink_and_errors_name_the_target(tmp_path, monkeypatch, capsys):
    import stat

    old = os.umask(0o022)
    try:
        path = tgs.write_submission(tmp_path / "s.csv", ["a"], _random_masks(1))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # like open(), not mkstemp's 0600
        os.chmod(path, 0o640)
        tgs.write_submission(path, ["a"], _random_masks(1, seed=2))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file keeps its mode
    finally:
        os.umask(old)
    # a symlink given as the target is replaced; the file it points to is left alone
    pointee = tmp_path / "elsewhere.csv"
    pointee.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(pointee)
    tgs.write_submission(link, ["a"], _random_masks(1))
    assert not link.is_symlink() and pointee.read_text() == "keep me"

    # an OS error names the submission, not the temporary file beside it
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError) as info:
        tgs.write_submission(path, ["a"], _random_masks(1))
    monkeypatch.setattr(os, "replace", real_replace)
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.csv", "link.csv", "s.csv"]
