"""The TGS Salt workflow end to end (command line and API), and its refusals of hostile input.

The parts have their own tests: test_tgs_postprocessing.py, test_tgs_submission.py,
test_tgs_options.py, test_tgs_run.py, test_tgs_inference.py.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from segtutor import tgs
from segtutor.metrics import tgs_map
from segtutor.tgs import inference, recipe
from tests.test_tgs_submission import _random_masks, _write_mask_png

# the end-to-end test trains the recipe's model at a tiny width so that it runs in seconds
E2E_MODEL, E2E_WIDTH = "resunet34", "0.125"


# --------------------------------------------------------------------------------------------
# the command line end to end: synth -> train (1 fold, 1 short cycle) -> predict -> evaluate
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_end_to_end_quick(tmp_path, capsys, monkeypatch):
    from segtutor import cli
    from segtutor.data import TGSSaltDataset

    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    data, run, sub = tmp_path / "data", tmp_path / "run", tmp_path / "submission.csv"
    assert cli.main(["tgs", "synth", "--out", str(data), "--n", "24", "--n-test", "8"]) == 0
    assert (
        cli.main(
            [
                "tgs",
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                "--folds",
                "3",
                "--train-folds",
                "0",
                "--model",
                E2E_MODEL,
                "--width",
                E2E_WIDTH,
                "--stage1-epochs",
                "1",
                "--cycles",
                "1",
                "--cycle-epochs",
                "1",
                "--batch-size",
                "8",
                "--no-progress",
                "--quick",
            ]
        )
        == 0
    )
    assert (run / "fold0" / "snapshot_1.pt").is_file() and (run / "postprocess.json").is_file()
    # the stage-1 weights are kept beside the snapshots, but are not one of them
    assert (run / "fold0" / "stage1.pt").is_file()
    assert tgs.snapshot_paths(run / "fold0") == [run / "fold0" / "snapshot_1.pt"]
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(sub),
                "--no-progress",
                "--quick",
            ]
        )
        == 0
    )
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
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(tmp_path / "nope"),
                "--out",
                str(sub),
            ]
        )
        == 2
    )
    lines = sub.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",3 -1"
    sub.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli.main(["tgs", "evaluate", "--data", str(data), "--submission", str(sub)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed rle_mask" in err


def test_cli_train_rejects_bad_options_in_one_line(tmp_path, capsys):
    from segtutor import cli

    assert (
        cli.main(
            [
                "tgs",
                "train",
                "--data",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "r"),
                "--folds",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "folds must be >= 2" in err
    # a folder without the Kaggle layout: the error names the missing file
    (tmp_path / "empty").mkdir()
    assert (
        cli.main(["tgs", "train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
        == 2
    )
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
    opts = tgs.TrainOptions(
        stage1_epochs=1,
        cycles=1,
        cycle_epochs=1,
        batch_size=8,
        width=0.125,
        progress=False,
        verbose=False,
    ).resolved()
    result = tgs.fit_fold(opts, (x[:16], y[:16]), (x[16:], y[16:]), tmp_path / "fold0")
    assert [p.name for p in result["snapshots"]] == ["snapshot_1.pt"]
    members = tgs.load_members(opts, result["snapshots"])
    probs, salt = tgs.predict_probs(members, x[16:])
    assert probs.shape == (8, 101, 101) and salt.shape == (8,)
    assert torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()


@pytest.mark.slow
def test_resume_keeps_finished_folds_and_trains_the_others(tmp_path, capsys, monkeypatch):
    from segtutor import cli

    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli.main(["tgs", "synth", "--out", str(data), "--n", "24", "--n-test", "4"]) == 0
    common = [
        "tgs",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--folds",
        "3",
        "--model",
        E2E_MODEL,
        "--width",
        E2E_WIDTH,
        "--stage1-epochs",
        "1",
        "--cycles",
        "0",
        "--batch-size",
        "8",
        "--no-progress",
        "--quick",
    ]
    assert cli.main([*common, "--train-folds", "0"]) == 0
    fold0 = (run / "fold0" / "snapshot_1.pt").read_bytes()
    trained = []
    real_fit_fold = tgs.fit_fold
    monkeypatch.setattr(
        recipe,
        "fit_fold",
        lambda opts, tr, va, fold_dir, name, **kw: (
            trained.append(name) or real_fit_fold(opts, tr, va, fold_dir, name, **kw)
        ),
    )
    assert cli.main([*common, "--train-folds", "1", "--resume"]) == 0
    assert trained == ["fold1"]  # fold 0 was finished by the first call: not trained again
    assert (run / "fold0" / "snapshot_1.pt").read_bytes() == fold0
    config = json.loads((run / "config.json").read_text())
    assert config["trained_folds"] == [0, 1]
    oof = torch.load(run / "oof.pt", weights_only=True)
    folds = torch.tensor(config["folds"])
    assert len(oof["ids"]) == int((folds <= 1).sum())  # out-of-fold predictions of both folds
    # the stored predictions reproduce the stored choice exactly (the book asserts this)
    post = json.loads((run / "postprocess.json").read_text())
    masks = tgs.postprocess(
        oof["probs"].float(),
        post["threshold"],
        post["min_size"],
        oof["salt_prob"],
        post["empty_threshold"],
    )
    assert tgs_map(masks, oof["masks"]) == pytest.approx(post["oof_tgs_map"], abs=1e-12)
    # a changed recipe cannot be mixed into the same run
    capsys.readouterr()
    changed = [a if a != "8" else "4" for a in common]  # --batch-size 4
    assert cli.main([*changed, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size" in err


@pytest.mark.slow
def test_an_interrupted_fold_continues_from_its_resume_point_and_ends_as_if_never_stopped(
    tmp_path, monkeypatch
):
    from segtutor.train import Trainer

    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    monkeypatch.setattr(recipe, "RESUME_EVERY", 1)  # a resume point after every epoch
    data = tgs.synth(tmp_path / "data", n=24, n_test=4, seed=0, progress=False)
    opts = tgs.TrainOptions(
        folds=3,
        train_folds=[0],
        model=E2E_MODEL,
        width=float(E2E_WIDTH),
        stage1_epochs=2,
        cycles=2,
        cycle_epochs=2,
        batch_size=8,
        progress=False,
        verbose=False,
    )
    whole = tgs.train(tmp_path / "whole", data=data, options=opts)

    real_epoch, calls = Trainer.train_epoch, []

    def counted(self, epoch, stop_at=None):
        calls.append(epoch)
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt  # a time limit, in the Lovasz stage's second cycle
        return real_epoch(self, epoch)

    run = tmp_path / "cut"
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch: counted(self, epoch, 5))
    with pytest.raises(KeyboardInterrupt):
        tgs.train(run, data=data, options=opts)
    fold = run / "fold0"
    # kept for the next call: the first cycle's snapshot and the resume points, no history
    assert (fold / "snapshot_1.pt").is_file() and not (fold / "snapshot_2.pt").exists()
    assert [p.name for p in recipe.resume_files(fold)] == ["resume_stage1.pt", "resume_stage2.pt"]
    assert not (fold / "history.json").exists() and recipe.has_progress(run)

    calls.clear()
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch: counted(self, epoch))
    tgs.train(run, data=data, options=opts, resume=True)
    assert calls == [3, 4]  # only the two epochs after the resume point, not the whole fold
    assert recipe.resume_files(fold) == []  # Adam's state goes once the fold is finished
    for j in (1, 2):
        a = torch.load(whole / "fold0" / f"snapshot_{j}.pt", weights_only=True)["model"]
        b = torch.load(fold / f"snapshot_{j}.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), f"snapshot_{j} differs"

    def rows(path):
        return [
            {k: v for k, v in r.items() if k != "time"}
            for r in json.loads((path / "fold0" / "history.json").read_text())
        ]

    assert rows(run) == rows(whole)
    assert json.loads((run / "postprocess.json").read_text()) == json.loads(
        (whole / "postprocess.json").read_text()
    )


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
        assert (
            cli.main(
                [
                    "tgs",
                    "train",
                    "--data",
                    str(data),
                    "--out",
                    str(run),
                    "--folds",
                    "2",
                    "--train-folds",
                    "0",
                    "--model",
                    E2E_MODEL,
                    "--width",
                    E2E_WIDTH,
                    "--stage1-epochs",
                    "1",
                    "--cycles",
                    "0",
                    "--batch-size",
                    "8",
                    "--no-progress",
                    "--quick",
                ]
            )
            == 0
        )
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
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


TRAIN_TINY = [
    "--folds",
    "2",
    "--train-folds",
    "0",
    "--model",
    E2E_MODEL,
    "--width",
    E2E_WIDTH,
    "--stage1-epochs",
    "1",
    "--cycles",
    "0",
    "--batch-size",
    "8",
    "--no-progress",
    "--quick",
]


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
        tgs_map(pred, truth)
    )
    # leaving the hard image out would raise the score from 2/3 to 1: it is an error instead
    partial = tgs.write_submission(tmp_path / "part.csv", ids[:2], pred[:2])
    assert tgs_map(pred[:2], truth[:2]) > tgs_map(pred, truth)
    with pytest.raises(tgs.TGSInputError, match="1 of the 3 test ids have no row.*'hard'"):
        tgs.evaluate_submission(tmp_path / "data", partial)
    assert (
        cli.main(
            ["tgs", "evaluate", "--data", str(tmp_path / "data"), "--submission", str(partial)]
        )
        == 2
    )
    _one_line_error(capsys, partial, "no row")


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_a_damaged_snapshot_is_named_by_predict_and_train_resume(
    tiny_run, tmp_path, capsys, damage
):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    snapshot = run / "fold0" / "snapshot_1.pt"
    content = snapshot.read_bytes()
    snapshot.write_bytes(
        {"truncated": content[: len(content) // 3], "empty": b"", "random": bytes(range(256)) * 16}[
            damage
        ]
    )
    sub = tmp_path / "s.csv"
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(sub),
                "--no-progress",
            ]
        )
        == 2
    )
    _one_line_error(capsys, snapshot, "damaged")
    assert not sub.exists()
    assert (
        cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY, "--resume"])
        == 2
    )
    _one_line_error(capsys, snapshot, "damaged")


def test_predict_applies_the_empty_image_threshold_chosen_at_training(tiny_run, tmp_path, capsys):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    post_file = run / "postprocess.json"
    chosen = json.loads(post_file.read_text())
    assert 0 <= chosen["empty_threshold"] <= 1 and set(chosen["empty_scores"]) == {
        "0",
        "0.3",
        "0.5",
        "0.7",
    }
    sub = tmp_path / "s.csv"
    n_test = len(tgs.split_ids(data, "test"))
    for empty, expected in [(1.0, "all"), (0.0, "threshold only")]:
        post_file.write_text(
            json.dumps({**chosen, "threshold": 0.5, "min_size": 0, "empty_threshold": empty})
        )
        summary = tgs.predict(data, run, sub, progress=False)
        assert summary["empty_threshold"] == empty
        masks = tgs.validate_submission(sub)
        n_empty = sum(int(m.sum() == 0) for m in masks.values())
        assert summary["n_empty"] == n_empty
        if expected == "all":  # no salt probability reaches 1: every mask blanked
            assert n_empty == n_test
        else:  # the rule off: the masks are the thresholded probabilities
            members = tgs.load_members(
                tgs.read_run_config(run)["options"], tgs.snapshot_paths(run / "fold0")
            )
            test = tgs.load_split(data, "test")
            probs, _ = tgs.predict_probs(members, tgs.to_model_size(test.images))
            assert n_empty == int(((probs > 0.5).flatten(1).sum(1) == 0).sum())
    # the command line's --empty-threshold overrides the chosen one; a file written before the
    # rule was searched gets the former fixed 0.5
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(sub),
                "--empty-threshold",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "empty-image threshold 1.00" in capsys.readouterr().out
    post_file.write_text(json.dumps({"threshold": 0.5, "min_size": 0}))
    assert tgs.predict(data, run, sub, progress=False)["empty_threshold"] == 0.5
    post_file.write_text(json.dumps({"threshold": 0.5, "min_size": 0, "empty_threshold": 2}))
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(sub),
                "--no-progress",
            ]
        )
        == 2
    )
    _one_line_error(capsys, post_file, "'empty_threshold'")


def test_a_snapshot_of_another_model_is_named(tiny_run, tmp_path, capsys):
    from segtutor import cli

    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    snapshot = run / "fold0" / "snapshot_1.pt"
    torch.save({"model": {"weight": torch.zeros(3)}}, snapshot)
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(tmp_path / "s.csv"),
                "--no-progress",
            ]
        )
        == 2
    )
    _one_line_error(capsys, snapshot, "does not hold the weights")


@pytest.mark.parametrize(
    "config, message",
    [
        ([1, 2], "expected a JSON object, got a JSON list"),
        ("unknown key", "unknown option(s) 'colour'"),
        ("bad folds", "'trained_folds' must list fold numbers"),
        ("bad lr", "lr must be a learning rate in (0, 1], got -1"),
    ],
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
    assert (
        cli.main(
            [
                "tgs",
                "predict",
                "--data",
                str(data),
                "--run",
                str(run),
                "--out",
                str(tmp_path / "s.csv"),
                "--no-progress",
            ]
        )
        == 2
    )
    _one_line_error(capsys, run / "config.json", message)
    assert (
        cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY, "--resume"])
        == 2
    )
    _one_line_error(capsys, run / "config.json", message)


def test_a_run_written_before_the_newer_options_reads_as_trained_without_them(tiny_run, tmp_path):
    data, run = tiny_run
    run = _copy_run(run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["full_res_skip"] and cfg["options"]["symmetric_lovasz"]
    for key in ("symmetric_lovasz", "full_res_skip", "zero_init_residual"):
        del cfg["options"][key]
    (run / "config.json").write_text(json.dumps(cfg))
    opts = tgs.read_run_config(run)["options"]
    assert (opts.symmetric_lovasz, opts.full_res_skip, opts.zero_init_residual) == (
        False,
        False,
        False,
    )
    # a snapshot of that older model (no full-resolution skip) loads under the options read
    snapshot = run / "fold0" / "snapshot_1.pt"
    torch.save({"model": tgs.build(opts).state_dict()}, snapshot)
    (member,) = tgs.load_members(opts, [snapshot])
    assert member.full_res is None


def test_stage2_criterion_is_the_symmetric_lovasz_hinge_unless_switched_off():
    from segtutor import losses

    logits = torch.randn(3, 1, 8, 8)
    labels = (torch.rand(3, 1, 8, 8) > 0.6).float()
    labels[0] = 0  # an empty image, where the two forms differ most
    forms = ((True, losses.symmetric_lovasz_hinge), (False, losses.lovasz_hinge))
    for symmetric, reference in forms:
        criterion = recipe._stage2_criterion("elu", symmetric)
        torch.testing.assert_close(
            criterion(logits, labels), reference(logits, labels, activation="elu+1")
        )
    assert tgs.TrainOptions().symmetric_lovasz
    assert not torch.allclose(
        recipe._stage2_criterion("elu", True)(logits, labels),
        recipe._stage2_criterion("elu", False)(logits, labels),
    )


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
        assert (
            cli.main(
                [
                    "tgs",
                    "train",
                    "--data",
                    str(spelling),
                    "--out",
                    str(run),
                    *TRAIN_TINY,
                    "--resume",
                ]
            )
            == 2
        )
        err = _one_line_error(capsys, "holds other images")
        assert "trained on" not in err
    config["ids"] = config["ids"][::-1]
    config["data"] = str(tmp_path / "elsewhere")
    (run / "config.json").write_text(json.dumps(config))
    assert (
        cli.main(["tgs", "train", "--data", str(data), "--out", str(run), *TRAIN_TINY, "--resume"])
        == 2
    )
    _one_line_error(capsys, f"trained on {tmp_path / 'elsewhere'}, not {data.resolve()}")


def test_a_failed_train_leaves_no_run_folder(tiny_run, tmp_path, capsys, monkeypatch):
    from segtutor import cli

    data, _ = tiny_run
    (tmp_path / "not-a-layout").mkdir()
    out = tmp_path / "new" / "run"
    assert (
        cli.main(
            [
                "tgs",
                "train",
                "--data",
                str(tmp_path / "not-a-layout"),
                "--out",
                str(out),
                *TRAIN_TINY,
            ]
        )
        == 2
    )
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
        raise NonFiniteLossError(
            "loss is nan at epoch 1, step 1 of the epoch; lower the learning rate"
        )

    monkeypatch.setattr(recipe, "fit_fold", diverges)
    assert (
        cli.main(["tgs", "train", "--data", str(data), "--out", str(tmp_path / "r1"), *TRAIN_TINY])
        == 2
    )
    _one_line_error(capsys, "fold 0: training diverged", "lower the learning rate")
    assert not (tmp_path / "r1").exists()

    # models whose predictions are NaN (a loss that stayed finite while the weights did not)
    snapshot = run / "fold0" / "snapshot_1.pt"

    def trained(opts, train_xy, val_xy, fold_dir, name="fold", **kwargs):
        fold_dir.mkdir(parents=True)
        return {"history": [], "snapshots": [snapshot]}

    monkeypatch.setattr(recipe, "fit_fold", trained)
    monkeypatch.setattr(
        recipe,
        "predict_probs",
        lambda members, x, *a, **k: (torch.full((len(x), 101, 101), float("nan")), None),
    )
    assert (
        cli.main(["tgs", "train", "--data", str(data), "--out", str(tmp_path / "r2"), *TRAIN_TINY])
        == 2
    )
    _one_line_error(capsys, "fold 0", "NaN or infinite", "--lr")


def test_predict_to_a_device_or_folder_is_refused_before_predicting(
    tiny_run, tmp_path, capsys, monkeypatch
):
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
        assert (
            cli.main(
                [
                    "tgs",
                    "predict",
                    "--data",
                    str(data),
                    "--run",
                    str(run),
                    "--out",
                    str(target),
                    "--no-progress",
                ]
            )
            == 2
        )
        _one_line_error(capsys, target)
    assert (tmp_path / "fifo").exists() and not (tmp_path / "fifo").is_file()


# --------------------------------------------------------------------------------------------
# the package: every public function and class of its modules, under one name
# --------------------------------------------------------------------------------------------


def test_the_package_offers_every_public_name_of_its_modules():
    import importlib
    import inspect

    from segtutor.data import coverage_class, coverage_folds

    for module_name in (
        "layout",
        "options",
        "postprocessing",
        "submission",
        "run",
        "inference",
        "recipe",
        "cache",
    ):
        module = importlib.import_module(f"segtutor.tgs.{module_name}")
        defined = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__
        ]
        if module_name == "options":  # the rules of the options are the command line's
            defined = ["TrainOptions"]
        for name in defined:
            assert getattr(tgs, name) is getattr(module, name), (module_name, name)
    assert tgs.make_folds is coverage_folds and tgs.coverage_classes is coverage_class
    for name in dir(tgs):
        getattr(tgs, name)
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        tgs.trian  # noqa: B018
