"""tgs.cached_run: train once, reuse; a changed recipe, seed, data or code trains again."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from segtutor import tgs
from segtutor.tgs import cache, recipe

# one fold of two, one epoch of stage 1 at a tiny width: seconds
TINY = dict(
    folds=2,
    train_folds=[0],
    model="resunet34",
    width=0.125,
    stage1_epochs=1,
    cycles=0,
    batch_size=8,
    progress=False,
    verbose=False,
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tgs.synth(
        tmp_path_factory.mktemp("cache") / "data", n=16, n_test=4, seed=0, progress=False
    )


@pytest.fixture
def count_fits(monkeypatch):
    """The names of the folds that fit_fold trains, in order."""
    trained = []
    real = recipe.fit_fold

    def counting(opts, tr, va, fold_dir, name="fold0", **kw):
        trained.append(name)
        return real(opts, tr, va, fold_dir, name, **kw)

    monkeypatch.setattr(recipe, "fit_fold", counting)
    return trained


def test_a_miss_trains_and_a_hit_on_a_copy_of_the_data_reuses_it(
    tiny_data, tmp_path, capsys, count_fits
):
    root = tmp_path / "runs"
    run = tgs.cached_run(tgs.TrainOptions(**TINY), tiny_data, root=root, by="tgs/training")
    assert count_fits == ["fold0"]
    assert run.parent == root and len(run.name) == 16
    assert tgs.is_complete(run) and (run / "fold0" / "snapshot_1.pt").is_file()
    # trained on its own copy of the data, which the run's config names
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str((run / "data").resolve())
    assert tgs.data_fingerprint(run / "data") == tgs.data_fingerprint(tiny_data)
    assert "training the run in" in capsys.readouterr().out
    # TensorBoard event files are kept with the run, so that a hit has them too
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))

    # the same set written elsewhere, options that only change what is shown: a hit
    copy = shutil.copytree(tiny_data, tmp_path / "elsewhere")
    watched = tgs.TrainOptions(
        **{**TINY, "progress": True, "verbose": True, "tensorboard": str(tmp_path / "tb")}
    )
    again = tgs.cached_run(watched, copy, root=root, by="tgs/inference")
    assert again == run and count_fits == ["fold0"]  # nothing trained again
    assert capsys.readouterr().out == f"reusing the run trained by tgs/training in {run}\n"


def test_the_key_follows_the_recipe_seed_folds_data_and_code(tiny_data, tmp_path, monkeypatch):
    key = tgs.recipe_key(tgs.TrainOptions(**TINY), tiny_data)
    for change in (
        {"lr": 1e-2},
        {"seed": 1},
        {"train_folds": [1]},
        {"stage1_epochs": 2},
        {"hypercolumn": False},
        {"size_mode": "resize"},
    ):
        assert tgs.recipe_key(tgs.TrainOptions(**{**TINY, **change}), tiny_data) != key, change
    for same in ({"progress": True}, {"verbose": True}, {"tensorboard": "tb"}, {"visdom": 8097}):
        assert tgs.recipe_key(tgs.TrainOptions(**{**TINY, **same}), tiny_data) == key, same
    # one changed byte of one mask
    data = shutil.copytree(tiny_data, tmp_path / "changed")
    mask = sorted((data / "train" / "masks").glob("*.png"))[0]
    raw = bytearray(mask.read_bytes())
    raw[-20] ^= 1
    mask.write_bytes(bytes(raw))
    assert tgs.data_fingerprint(data) != tgs.data_fingerprint(tiny_data)
    assert tgs.recipe_key(tgs.TrainOptions(**TINY), data) != key
    # an edit of the code that trains
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "edited")
    assert tgs.recipe_key(tgs.TrainOptions(**TINY), tiny_data) != key


def test_the_key_resolves_the_defaults_of_the_mode(tiny_data, monkeypatch):
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    quick = tgs.recipe_key(tgs.TrainOptions(), tiny_data)
    assert quick == tgs.recipe_key(tgs.TrainOptions().resolved(), tiny_data)
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    assert tgs.recipe_key(tgs.TrainOptions(), tiny_data) != quick


def test_an_interrupted_run_is_continued_and_keeps_its_finished_folds(
    tiny_data, tmp_path, monkeypatch, count_fits
):
    root = tmp_path / "runs"
    options = tgs.TrainOptions(**{**TINY, "train_folds": [0, 1]})
    real = recipe.fit_fold  # the counting wrapper

    def stop_at_fold1(opts, tr, va, fold_dir, name="fold0", **kw):
        if name == "fold1":
            raise KeyboardInterrupt
        return real(opts, tr, va, fold_dir, name, **kw)

    monkeypatch.setattr(recipe, "fit_fold", stop_at_fold1)
    with pytest.raises(KeyboardInterrupt):
        tgs.cached_run(options, tiny_data, root=root)
    run = root / tgs.recipe_key(options, tiny_data)
    assert (run / "fold0" / "history.json").is_file() and not tgs.is_complete(run)
    fold0 = (run / "fold0" / "snapshot_1.pt").read_bytes()

    monkeypatch.setattr(recipe, "fit_fold", real)
    assert tgs.cached_run(options, tiny_data, root=root) == run
    assert count_fits == ["fold0", "fold1"]  # fold 0 once, before the interruption
    assert (run / "fold0" / "snapshot_1.pt").read_bytes() == fold0
    assert tgs.is_complete(run)


def test_a_failure_before_any_finished_fold_leaves_no_run(tiny_data, tmp_path, monkeypatch):
    root = tmp_path / "runs"

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(recipe, "fit_fold", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        tgs.cached_run(tgs.TrainOptions(**TINY), tiny_data, root=root)
    assert [p.suffix for p in root.iterdir()] == [".lock"]  # no run folder, no data copy


def test_two_callers_at_once_train_once(tiny_data, tmp_path, count_fits):
    root, runs, errors = tmp_path / "runs", [], []

    def call():
        try:
            runs.append(tgs.cached_run(tgs.TrainOptions(**TINY), tiny_data, root=root))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(runs) == 2 and runs[0] == runs[1]
    assert count_fits == ["fold0"]


def test_default_root_is_the_checkout_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    checkout = cache._CHECKOUT
    if (checkout / "pyproject.toml").is_file():
        assert tgs.default_root() == checkout / "runs" / "book"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert tgs.default_root() == tmp_path / "elsewhere"


def test_bad_input_is_named(tmp_path, tiny_data):
    with pytest.raises(tgs.TGSInputError, match="data folder .*nope does not exist"):
        tgs.cached_run(tgs.TrainOptions(**TINY), tmp_path / "nope", root=tmp_path / "runs")
    with pytest.raises(TypeError, match="by must be a str"):
        tgs.cached_run(tgs.TrainOptions(**TINY), tiny_data, root=tmp_path / "runs", by=3)
    with pytest.raises(ValueError, match="lr must be"):
        tgs.cached_run(tgs.TrainOptions(**{**TINY, "lr": -1.0}), tiny_data, root=tmp_path / "runs")
