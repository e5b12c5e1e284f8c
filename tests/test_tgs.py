"""The TGS Salt workflow: threshold search, post-processing, the submission file, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from segtutor import tgs
from segtutor.metrics import tgs_map

# the end-to-end test trains the recipe's model at a tiny width so that it runs in seconds
E2E_MODEL, E2E_WIDTH = "resunet34", "0.125"

# --------------------------------------------------------------------------------------------
# threshold search
# --------------------------------------------------------------------------------------------


def _constructed_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 20x20 images whose best threshold on the 0.30..0.70 grid is 0.55 and only 0.55.

    Salt pixels get probability 0.57, a one-pixel ring around the salt 0.52, and the two empty
    images a false-positive blob of 0.52; everything else 0.2. Then
      t <= 0.50: the ring and the blobs are predicted: IoU of the salt images drops below 0.95,
                 empty images score 0;
      t  = 0.55: exactly the salt: every image scores 1;
      t >= 0.60: nothing is predicted: the salt images score 0, the empty ones 1.
    """
    probs = torch.full((4, 20, 20), 0.2)
    masks = torch.zeros(4, 20, 20)
    for i, (r, c, s) in enumerate([(3, 3, 8), (9, 6, 6)]):
        probs[i, r - 1:r + s + 1, c - 1:c + s + 1] = 0.52
        probs[i, r:r + s, c:c + s] = 0.57
        masks[i, r:r + s, c:c + s] = 1
    probs[2, 5:9, 5:9] = 0.52
    probs[3, 12:15, 2:6] = 0.52
    return probs, masks


def test_threshold_search_finds_the_constructed_best():
    probs, masks = _constructed_case()
    grid = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70]
    result = tgs.search_threshold(probs, masks, grid)
    assert result.threshold == pytest.approx(0.55)
    assert result.score == pytest.approx(1.0)
    assert result.thresholds == grid
    by_t = dict(zip(result.thresholds, result.scores))
    assert by_t[0.60] == pytest.approx(0.5)  # only the two empty images right
    assert max(s for t, s in by_t.items() if t != 0.55) < 1.0
    # each score is the metric of the thresholded masks, computed independently here
    for t, s in by_t.items():
        assert s == pytest.approx(tgs_map(probs > t, masks > 0.5))


def test_threshold_search_ties_go_to_the_threshold_nearest_one_half():
    probs = torch.tensor([[[0.9, 0.1], [0.1, 0.1]]])  # any t in [0.1, 0.9) is perfect
    masks = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert tgs.search_threshold(probs, masks, [0.2, 0.45, 0.6, 0.8]).threshold == 0.45


def test_threshold_search_applies_postprocessing_before_scoring():
    probs, masks = _constructed_case()
    # a post-processing step that blanks images 2 and 3 (the empty ones) rescues t = 0.50
    def blank_empty(pred):
        pred = pred.clone()
        pred[2:] = False
        return pred

    result = tgs.search_threshold(probs, masks, [0.50, 0.60], postprocess=blank_empty)
    assert result.scores[1] == pytest.approx(0.5)
    assert result.scores[0] == pytest.approx(tgs_map(blank_empty(probs > 0.5), masks))


def test_threshold_search_rejects_bad_shapes():
    with pytest.raises(ValueError, match="probs and masks"):
        tgs.search_threshold(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="thresholds"):
        tgs.search_threshold(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), [])


# --------------------------------------------------------------------------------------------
# post-processing
# --------------------------------------------------------------------------------------------


def test_suppress_empty_blanks_only_images_called_empty():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    out = tgs.suppress_empty(masks, torch.tensor([0.9, 0.2, 0.5]), empty_threshold=0.5)
    assert out[0].all() and not out[1].any() and out[2].all()
    assert tgs.suppress_empty(masks, None) is masks
    with pytest.raises(ValueError, match="salt_prob"):
        tgs.suppress_empty(masks, torch.tensor([0.9]))


# --------------------------------------------------------------------------------------------
# submission file
# --------------------------------------------------------------------------------------------


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
        (lambda rows: rows.__setitem__(2, rows[2].split(",")[0] + ",10200 50"), "line 3: malformed"),
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

    monkeypatch.setattr(tgs.os, "replace", broken_replace)
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
    pred[1] = ~pred[1]                 # a bad prediction
    pred[2, :50] = False               # a partial one
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


# --------------------------------------------------------------------------------------------
# the command line end to end: synth -> train (1 fold, 1 short cycle) -> predict -> evaluate
# --------------------------------------------------------------------------------------------


def test_cli_end_to_end_quick(tmp_path, capsys, monkeypatch):
    from segtutor import cli
    from segtutor.data import TGSSaltDataset

    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    data, run, sub = tmp_path / "data", tmp_path / "run", tmp_path / "submission.csv"
    assert cli.main(["tgs", "synth", "--out", str(data), "--n", "24", "--n-test", "8"]) == 0
    assert cli.main([
        "tgs", "train", "--data", str(data), "--out", str(run), "--folds", "3",
        "--train-folds", "0", "--model", E2E_MODEL, "--width", E2E_WIDTH,
        "--stage1-epochs", "1", "--cycles", "1", "--cycle-epochs", "1", "--batch-size", "8",
        "--no-progress", "--quick",
    ]) == 0
    assert (run / "fold0" / "snapshot_1.pt").is_file() and (run / "postprocess.json").is_file()
    assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(run), "--out", str(sub),
                     "--no-progress", "--quick"]) == 0
    capsys.readouterr()
    assert cli.main(["tgs", "evaluate", "--data", str(data), "--submission", str(sub)]) == 0
    printed = float(capsys.readouterr().out.strip())

    # the same score computed directly: decode the file ourselves, masks from the dataset
    test = TGSSaltDataset(data, "test")
    _, true_masks, _, ids = test.arrays()
    decoded = tgs.validate_submission(sub, expected_ids=ids)
    pred = torch.stack([torch.from_numpy(decoded[i]) for i in ids])
    assert printed == pytest.approx(tgs_map(pred, true_masks), abs=1e-6)
    assert len(sub.read_text().splitlines()) == 1 + len(ids)

    # and bad input to the same commands: one line on stderr, status 2
    assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(tmp_path / "nope"),
                     "--out", str(sub)]) == 2
    lines = sub.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",3 -1"
    sub.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli.main(["tgs", "evaluate", "--data", str(data), "--submission", str(sub)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed rle_mask" in err


def test_postprocess_thresholds_removes_small_components_and_empty_images():
    probs = torch.zeros(3, 12, 12)
    probs[:, 1:6, 1:6] = 0.9        # a 25-pixel component in every image
    probs[:, 9, 9] = 0.8            # a 1-pixel speck
    probs[:, 8:11, 1:3] = 0.4       # below the threshold
    out = tgs.postprocess(probs, threshold=0.5, min_size=4,
                          salt_prob=torch.tensor([0.9, 0.1, 0.7]), empty_threshold=0.5)
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[1:6, 1:6] = True
    assert torch.equal(out[0], expected) and torch.equal(out[2], expected)
    assert not out[1].any()         # the classifier called image 1 empty
    # min_size 0 keeps the speck
    assert tgs.postprocess(probs, 0.5, 0)[0, 9, 9]


def test_postprocess_search_picks_min_size_that_removes_false_specks():
    probs, masks = _constructed_case()
    probs[2, 18, 18] = 0.9          # isolated false-positive pixels on the two empty images,
    probs[3, 0, 19] = 0.9           # which no threshold below 0.9 removes but min_size does
    result = tgs.search_postprocess(probs, masks, thresholds=[0.5, 0.55, 0.6], min_sizes=[0, 5])
    assert result["min_size"] == 5 and result["threshold"] == pytest.approx(0.55)
    assert result["score"] == pytest.approx(1.0)
    assert result["table"][0].score < 1.0


def test_train_options_resolve_and_reject_bad_values(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    quick = tgs.TrainOptions().resolved()
    assert (quick.stage1_epochs, quick.cycles, quick.cycle_epochs, quick.width) == (2, 1, 1, 0.125)
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    full = tgs.TrainOptions().resolved()
    assert (full.stage1_epochs, full.cycles, full.cycle_epochs, full.width) == (30, 4, 20, 1.0)
    kwargs = full.model_kwargs()
    assert kwargs["encoder_width"] == 1.0 and kwargs["decoder_width"] == 64
    assert kwargs["attention"] and kwargs["hypercolumn"] and kwargs["classify"]
    for bad, message in [({"folds": 1}, "folds"), ({"train_folds": [5]}, "train_folds"),
                         ({"size_mode": "crop"}, "size_mode"), ({"lovasz": "x"}, "lovasz"),
                         ({"stage1_epochs": 0, "cycles": 0}, "nothing to train")]:
        with pytest.raises(ValueError, match=message):
            tgs.TrainOptions(**bad).resolved()


def test_cli_train_rejects_bad_options_in_one_line(tmp_path, capsys):
    from segtutor import cli

    assert cli.main(["tgs", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"),
                     "--folds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "folds must be >= 2" in err
    # a folder without the Kaggle layout: the error names the missing file
    (tmp_path / "empty").mkdir()
    assert cli.main(["tgs", "train", "--data", str(tmp_path / "empty"), "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.csv" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_fold_on_cuda_with_amp_and_gpu_resident_data(tmp_path, monkeypatch):
    from segtutor.data import make_tgs_like

    monkeypatch.setenv("SEGTUTOR_DEVICE", "cuda")
    data = make_tgs_like(24, seed=0)
    x = tgs.to_model_size(data.images[:, None])
    y = tgs.to_model_size(data.masks, mask=True)
    opts = tgs.TrainOptions(stage1_epochs=1, cycles=1, cycle_epochs=1, batch_size=8, width=0.125,
                            progress=False, verbose=False).resolved()
    result = tgs.fit_fold(opts, (x[:16], y[:16]), (x[16:], y[16:]), tmp_path / "fold0")
    assert [p.name for p in result["snapshots"]] == ["snapshot_1.pt"]
    members = tgs.load_members(opts, result["snapshots"])
    probs, salt = tgs.predict_probs(members, x[16:])
    assert probs.shape == (8, 101, 101) and salt.shape == (8,)
    assert torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()


def test_model_outputs_reads_the_empty_image_head_only_where_there_is_one():
    from segtutor.models import build_model

    x = torch.randn(2, 1, 64, 64)
    with_head = build_model("resunet34", num_classes=1, in_channels=1, classify=True,
                            decoder_width=8, encoder_width=0.25).eval()
    # DeepLab's `classifier` is its segmentation head, not an empty-image head
    deeplab = build_model("deeplabv3", num_classes=1, in_channels=1, backbone="resnet18",
                          encoder_width=0.25, head_width=16).eval()
    with torch.no_grad():
        both = tgs._model_outputs(with_head, x)
        assert torch.equal(both["out"], with_head(x)) and both["cls"].shape == (2, 1)
        only = tgs._model_outputs(deeplab, x)
    assert set(only) == {"out"} and torch.equal(only["out"], deeplab(x))


def test_resume_keeps_finished_folds_and_trains_the_others(tmp_path, capsys, monkeypatch):
    from segtutor import cli

    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli.main(["tgs", "synth", "--out", str(data), "--n", "24", "--n-test", "4"]) == 0
    common = ["tgs", "train", "--data", str(data), "--out", str(run), "--folds", "3",
              "--model", E2E_MODEL, "--width", E2E_WIDTH, "--stage1-epochs", "1", "--cycles",
              "0", "--batch-size", "8", "--no-progress", "--quick"]
    assert cli.main([*common, "--train-folds", "0"]) == 0
    fold0 = (run / "fold0" / "snapshot_1.pt").read_bytes()
    trained = []
    real_fit_fold = tgs.fit_fold
    monkeypatch.setattr(tgs, "fit_fold",
                        lambda opts, tr, va, fold_dir, name, **kw:
                        trained.append(name) or real_fit_fold(opts, tr, va, fold_dir, name, **kw))
    assert cli.main([*common, "--train-folds", "1", "--resume"]) == 0
    assert trained == ["fold1"]  # fold 0 was finished by the first call: not trained again
    assert (run / "fold0" / "snapshot_1.pt").read_bytes() == fold0
    config = json.loads((run / "config.json").read_text())
    assert config["trained_folds"] == [0, 1]
    oof = torch.load(run / "oof.pt", weights_only=True)
    folds = torch.tensor(config["folds"])
    assert len(oof["ids"]) == int((folds <= 1).sum())  # out-of-fold predictions of both folds
    # a changed recipe cannot be mixed into the same run
    capsys.readouterr()
    changed = [a if a != "8" else "4" for a in common]  # --batch-size 4
    assert cli.main([*changed, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size" in err
