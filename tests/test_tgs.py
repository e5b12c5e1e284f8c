"""The TGS Salt workflow: threshold search, post-processing, the submission file, end to end."""

from __future__ import annotations

import json
import os

import pytest
import torch

from segtutor import tgs
from segtutor.metrics import tgs_map
from segtutor.tgs import inference, recipe

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
        both = inference._model_outputs(with_head, x)
        assert torch.equal(both["out"], with_head(x)) and both["cls"].shape == (2, 1)
        only = inference._model_outputs(deeplab, x)
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
    monkeypatch.setattr(recipe, "fit_fold",
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


# --------------------------------------------------------------------------------------------
# hostile input to the workflow: one line naming what is wrong, status 2, nothing left behind
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A synthetic set and a run trained on it (1 fold of 2, one stage-1 epoch, tiny width)."""
    from segtutor import cli

    root = tmp_path_factory.mktemp("tiny")
    data, run = root / "data", root / "run"
    before = os.environ.get("SEGTUTOR_QUICK")
    os.environ["SEGTUTOR_QUICK"] = "1"
    try:
        assert cli.main(["tgs", "synth", "--out", str(data), "--n", "16", "--n-test", "4"]) == 0
        assert cli.main(["tgs", "train", "--data", str(data), "--out", str(run), "--folds", "2",
                         "--train-folds", "0", "--model", E2E_MODEL, "--width", E2E_WIDTH,
                         "--stage1-epochs", "1", "--cycles", "0", "--batch-size", "8",
                         "--no-progress", "--quick"]) == 0
    finally:
        if before is None:
            os.environ.pop("SEGTUTOR_QUICK", None)
        else:
            os.environ["SEGTUTOR_QUICK"] = before
    return data, run


def _copy_run(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


TRAIN_TINY = ["--folds", "2", "--train-folds", "0", "--model", E2E_MODEL, "--width", E2E_WIDTH,
              "--stage1-epochs", "1", "--cycles", "0", "--batch-size", "8", "--no-progress",
              "--quick"]


def test_train_refuses_a_folder_holding_a_run_unless_resume(tiny_run, tmp_path, capsys):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    before = _tree(run)
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY]) == 2
    _one_line_error(capsys, run, "not empty", "--resume")
    assert _tree(run) == before  # nothing trained, nothing written
    # any other content counts too, and the API says the same
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(tgs.TGSInputError, match="not empty"):
        tgs.train(tmp_path / "other", data=data)


def test_evaluate_refuses_a_submission_that_leaves_out_images(tmp_path, capsys):
    from segtutor import cli

    truth = _random_masks(3, seed=5)
    truth[0] = False  # an easy, empty image...
    ids = ["e0", "e1", "hard"]
    for image_id, mask in zip(ids, truth):
        for kind in ("images", "masks"):
            _write_mask_png(tmp_path / "data" / "test" / kind / f"{image_id}.png", mask)
    pred = truth.clone()
    pred[2] = ~truth[2]  # ...and a hard one predicted wrong
    complete = tgs.write_submission(tmp_path / "all.csv", ids, pred)
    assert tgs.evaluate_submission(tmp_path / "data", complete) == pytest.approx(
        tgs_map(pred, truth))
    # leaving the hard image out would raise the score from 2/3 to 1: it is an error instead
    partial = tgs.write_submission(tmp_path / "part.csv", ids[:2], pred[:2])
    assert tgs_map(pred[:2], truth[:2]) > tgs_map(pred, truth)
    with pytest.raises(tgs.TGSInputError, match="1 of the 3 test ids have no row.*'hard'"):
        tgs.evaluate_submission(tmp_path / "data", partial)
    assert cli.main(["tgs", "evaluate", "--data", str(tmp_path / "data"), "--submission",
                     str(partial)]) == 2
    _one_line_error(capsys, partial, "no row")


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_a_damaged_snapshot_is_named_by_predict_and_train_resume(tiny_run, tmp_path, capsys,
                                                                 damage):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    snapshot = run / "fold0" / "snapshot_1.pt"
    content = snapshot.read_bytes()
    snapshot.write_bytes({"truncated": content[: len(content) // 3], "empty": b"",
                          "random": bytes(range(256)) * 16}[damage])
    sub = tmp_path / "s.csv"
    assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(run), "--out", str(sub),
                     "--no-progress"]) == 2
    _one_line_error(capsys, snapshot, "damaged")
    assert not sub.exists()
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY,
                     "--resume"]) == 2
    _one_line_error(capsys, snapshot, "damaged")


def test_a_snapshot_of_another_model_is_named(tiny_run, tmp_path, capsys):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    snapshot = run / "fold0" / "snapshot_1.pt"
    torch.save({"model": {"weight": torch.zeros(3)}}, snapshot)
    assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(run), "--out",
                     str(tmp_path / "s.csv"), "--no-progress"]) == 2
    _one_line_error(capsys, snapshot, "does not hold the weights")


@pytest.mark.parametrize(
    "config, message",
    [([1, 2], "expected a JSON object, got a JSON list"),
     ("unknown key", "unknown option(s) 'colour'"),
     ("bad folds", "'trained_folds' must list fold numbers"),
     ("bad lr", "lr must be a learning rate in (0, 1], got -1")],
)
def test_a_broken_run_config_is_named(tiny_run, tmp_path, capsys, config, message):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    good = json.loads((run / "config.json").read_text())
    if config == "unknown key":
        good["options"]["colour"] = "blue"
        config = good
    elif config == "bad folds":
        good["trained_folds"] = [0, 7]
        config = good
    elif config == "bad lr":
        good["options"]["lr"] = -1
        config = good
    (run / "config.json").write_text(json.dumps(config))
    assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(run), "--out",
                     str(tmp_path / "s.csv"), "--no-progress"]) == 2
    _one_line_error(capsys, run / "config.json", message)
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY,
                     "--resume"]) == 2
    _one_line_error(capsys, run / "config.json", message)


def test_resume_refusal_says_what_differs(tiny_run, tmp_path, capsys):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["ids"] = config["ids"][::-1]  # same folder, other images
    (run / "config.json").write_text(json.dumps(config))
    # the same folder named another way: relative, through "..", through a symlink
    link = tmp_path / "data-link"
    link.symlink_to(data)
    for spelling in (link, data / ".." / data.name):
        assert cli.main(["tgs", "train", "--data", str(spelling), "--out", str(run),
                         *TRAIN_TINY, "--resume"]) == 2
        err = _one_line_error(capsys, "holds other images")
        assert "trained on" not in err
    config["ids"] = config["ids"][::-1]
    config["data"] = str(tmp_path / "elsewhere")
    (run / "config.json").write_text(json.dumps(config))
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY,
                     "--resume"]) == 2
    _one_line_error(capsys, f"trained on {tmp_path / 'elsewhere'}, not {data.resolve()}")


def test_a_failed_train_leaves_no_run_folder(tiny_run, tmp_path, capsys, monkeypatch):
    from segtutor import cli

    data, _ = tiny_run
    (tmp_path / "not-a-layout").mkdir()
    out = tmp_path / "new" / "run"
    assert cli.main(["tgs", "train", "--data", str(tmp_path / "not-a-layout"), "--out", str(out),
                     *TRAIN_TINY]) == 2
    _one_line_error(capsys, "train.csv")
    assert not (tmp_path / "new").exists()

    # a failure during training (here: interrupted) removes what the call created...
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "fit_fold", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tgs.train(out, data=data, options=tgs.TrainOptions(folds=2, train_folds=[0]))
    assert not (tmp_path / "new").exists()
    # ...but never a folder that was there before
    out.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        tgs.train(out, data=data, options=tgs.TrainOptions(folds=2, train_folds=[0]))
    assert out.is_dir()


def test_training_that_diverges_is_a_one_line_error(tiny_run, tmp_path, capsys, monkeypatch):
    from segtutor import cli
    from segtutor.train import NonFiniteLossError

    data, run = tiny_run

    def diverges(*args, **kwargs):
        raise NonFiniteLossError("loss is nan at epoch 1, step 1 of the epoch; lower the "
                                 "learning rate")

    monkeypatch.setattr(recipe, "fit_fold", diverges)
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(tmp_path / "r1"),
                     *TRAIN_TINY]) == 2
    _one_line_error(capsys, "fold 0: training diverged", "lower the learning rate")
    assert not (tmp_path / "r1").exists()

    # models whose predictions are NaN (a loss that stayed finite while the weights did not)
    snapshot = run / "fold0" / "snapshot_1.pt"
    def trained(opts, train_xy, val_xy, fold_dir, name="fold", **kwargs):
        fold_dir.mkdir(parents=True)
        return {"history": [], "snapshots": [snapshot]}

    monkeypatch.setattr(recipe, "fit_fold", trained)
    monkeypatch.setattr(recipe, "predict_probs",
                        lambda members, x, *a, **k: (torch.full((len(x), 101, 101), float("nan")),
                                                     None))
    assert cli.main(["tgs", "train", "--data", str(data), "--out", str(tmp_path / "r2"),
                     *TRAIN_TINY]) == 2
    _one_line_error(capsys, "fold 0", "NaN or infinite", "--lr")


def test_train_options_reject_non_finite_and_out_of_range_numbers():
    for bad, name in [({"lr": float("nan")}, "lr"), ({"lr": float("inf")}, "lr"),
                      ({"lr": 0.0}, "lr"), ({"lr": -0.1}, "lr"), ({"width": float("inf")}, "width"),
                      ({"seed": -1}, "seed"), ({"visdom": 70000}, "visdom"),
                      ({"batch_size": 0}, "batch_size"),
                      ({"aux_weight": float("nan")}, "aux_weight"),
                      ({"seed": True}, "seed")]:
        with pytest.raises(ValueError, match=f"^{name} must be"):
            tgs.TrainOptions(stage1_epochs=1, cycles=0, **bad).resolved()
    with pytest.raises(ValueError, match="seed must be"):
        tgs.synth("never-written", n=2, seed=-1)


def test_predict_to_a_device_or_folder_is_refused_before_predicting(tiny_run, tmp_path, capsys,
                                                                    monkeypatch):
    from pathlib import Path

    from segtutor import cli

    data, run = tiny_run
    monkeypatch.setattr(inference, "load_members", lambda *a, **k: pytest.fail("predicted anyway"))
    targets = [tmp_path]
    if Path("/dev/full").exists():
        targets.append(Path("/dev/full"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        targets.append(tmp_path / "fifo")
    for target in targets:
        assert cli.main(["tgs", "predict", "--data", str(data), "--run", str(run), "--out",
                         str(target), "--no-progress"]) == 2
        _one_line_error(capsys, target)
    assert (tmp_path / "fifo").exists() and not (tmp_path / "fifo").is_file()


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


def test_postprocess_and_predict_probs_reject_bad_numbers():
    probs = torch.rand(2, 8, 8)
    for bad in (float("nan"), float("inf"), -0.1, 1.5, None):
        with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\]"):
            tgs.postprocess(probs, threshold=bad)
        with pytest.raises(ValueError, match="empty_threshold must be"):
            tgs.postprocess(probs, 0.5, salt_prob=torch.rand(2), empty_threshold=bad)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="min_size must be"):
            tgs.postprocess(probs, 0.5, min_size=bad)
    model = torch.nn.Conv2d(1, 1, 1)
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            tgs.predict_probs([model], torch.zeros(2, 1, 128, 128), batch_size=bad)


# --------------------------------------------------------------------------------------------
# the package: every public function and class of its modules, under one name
# --------------------------------------------------------------------------------------------


def test_the_package_offers_every_public_name_of_its_modules():
    import importlib
    import inspect

    from segtutor.data import coverage_class, coverage_folds

    for module_name in ("layout", "options", "postprocessing", "submission", "run", "inference",
                        "recipe"):
        module = importlib.import_module(f"segtutor.tgs.{module_name}")
        defined = [name for name, value in vars(module).items()
                   if not name.startswith("_") and (inspect.isfunction(value)
                                                    or inspect.isclass(value))
                   and value.__module__ == module.__name__]
        if module_name == "options":  # the rules of the options are the command line's
            defined = ["TrainOptions"]
        for name in defined:
            assert getattr(tgs, name) is getattr(module, name), (module_name, name)
    assert tgs.make_folds is coverage_folds and tgs.coverage_classes is coverage_class
    for name in dir(tgs):
        getattr(tgs, name)
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        tgs.trian  # noqa: B018
