"""Train once, reuse: a run folder kept on disk and found again by what it was trained from.

The book's TGS chapters all need the same trained pipeline: the training chapter trains it, the
inference and ablation chapters use it. Training it three times would triple the cost of the
book, so :func:`cached_run` keeps the run under ``ROOT/<key>`` (default ``runs/book/`` in the
checkout, git-ignored), where ``key`` is a hash of

- the recipe: the resolved :class:`~segtutor.tgs.TrainOptions`, less the options that only say
  how a run is watched (progress bars, printing, TensorBoard, visdom);
- the data: the bytes of every file of the data folder, so that two chapters that write the same
  synthetic set into two temporary folders find the same run, and another seed does not;
- the code that trains: the sources of the modules the recipe runs (models, losses, trainer,
  data, metrics, the workflow), so that an edit of the recipe's code retrains rather than serving
  a run the current code would not produce.

The first call trains (a cache miss); later calls with the same key return the folder at once
and say so. The data are copied into ``ROOT/<key>/data`` and the run trained on that copy, so the
run folder is self-contained (as ``tgs.train(data=None)`` makes it) and its ``config.json`` names
a data folder that does not move: an interrupted training is continued by the next call with
:func:`segtutor.tgs.train`'s ``resume`` (its finished folds are kept), and a run from another
recipe can never be mixed in (the key differs; ``resume`` refuses it anyway). A lock file makes
a second process that asks for the same run while it is being trained wait for it instead of
training it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from segtutor import runs
from segtutor.tgs.layout import TGSInputError, _require_dir
from segtutor.tgs.options import TrainOptions
from segtutor.tgs.run import _write_json, read_run_config

# runs/book in the checkout, or $SEGTUTOR_RUN_CACHE: see segtutor.runs
_CHECKOUT = runs._CHECKOUT
CACHE_ENV = runs.CACHE_ENV
default_root = runs.default_root

# options that change how a run is watched, not what it learns
WATCH_OPTIONS = ("progress", "verbose", "tensorboard", "visdom")

# the parts of the package whose code decides what a run learns
_TRAINING_CODE = (
    "tgs",
    "train",
    "models",
    "losses",
    "data",
    "metrics",
    "postprocess.py",
    "config.py",
)

# bump when the layout of a cached run folder changes
_CACHE_FORMAT = 1


def data_fingerprint(data_dir: str | os.PathLike) -> str:
    """SHA-256 (hex) of every file under ``data_dir``: relative path and bytes, in sorted order.

    Two folders with the same files (two copies of one synthetic set) give the same value,
    wherever they are; one changed pixel gives another.
    """
    folder = _require_dir(Path(data_dir), "data folder")
    h = hashlib.sha256()
    runs.hash_files(h, folder, sorted(p for p in folder.rglob("*") if p.is_file()))
    return h.hexdigest()


def code_fingerprint() -> str:
    """SHA-256 (hex) of the sources of the modules that train a run (``.py`` files only)."""
    return runs.source_fingerprint(_TRAINING_CODE)


def recipe_key(options: TrainOptions | None, data_dir: str | os.PathLike) -> str:
    """The cache key of training ``options`` on ``data_dir``: 16 hex digits.

    The options are resolved first (``None`` sizes become the quick or full defaults of the
    mode), so the same :class:`TrainOptions` gives another key in the other mode. The options
    in :data:`WATCH_OPTIONS` are left out; the seed, the folds trained and every size are in.
    """
    opts = (options or TrainOptions()).resolved()
    recipe = {k: v for k, v in asdict(opts).items() if k not in WATCH_OPTIONS}
    text = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "recipe": recipe,
            "data": data_fingerprint(data_dir),
            "code": code_fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished run: a valid ``config.json``, the ``history.json``
    of every fold it lists as trained, ``oof.pt`` and ``postprocess.json`` (written last)."""
    run = Path(run_dir)
    try:
        cfg = read_run_config(run)
    except TGSInputError:
        return False
    return (
        (run / "postprocess.json").is_file()
        and (run / "oof.pt").is_file()
        and all((run / f"fold{k}" / "history.json").is_file() for k in cfg["trained_folds"])
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) while the block runs; without ``fcntl``
    (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no advisory locks: one process at a time is assumed
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_data(data: Path, target: Path) -> None:
    """Copy the data folder to ``target`` all at once: into a temporary sibling, then renamed."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(data, partial)
    os.replace(partial, target)


def cached_run(
    options: TrainOptions | None,
    data_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    by: str = "",
) -> Path:
    """The run folder of ``options`` trained on ``data_dir``: trained now if no earlier call made
    it, otherwise the earlier one.

    Args:
        options: the recipe (:class:`TrainOptions`; None = the defaults of the mode).
        data_dir: a folder in Kaggle's layout (the real data or ``tgs.synth``'s output).
        root: where runs are kept; default :func:`default_root` (``runs/book`` in the checkout,
            or ``$SEGTUTOR_RUN_CACHE``).
        by: who trains it, for the message of later hits (e.g. ``"tgs/training"``).

    Returns:
        ``ROOT/<key>`` (:func:`recipe_key`), a complete run folder as :func:`segtutor.tgs.train`
        writes it (plus ``data/``, the copy it was trained on, and ``cache.json``), ready for
        :func:`segtutor.tgs.predict`. A hit prints ``reusing the run trained by <by> in <path>``;
        a miss prints where it trains, then trains (continuing the finished folds of an
        interrupted earlier call). A failed training that finished no fold leaves nothing
        behind. Unless ``options.tensorboard`` names another folder, the TensorBoard event files
        of the training go to ``ROOT/<key>/tensorboard``, so that a hit has them too.
    """
    opts = (options or TrainOptions()).resolved()
    data = _require_dir(Path(data_dir), "data folder")
    if not isinstance(by, str):
        raise TypeError(f"by must be a str naming who trains the run, got {type(by).__name__}")
    root = default_root() if root is None else Path(root)
    key = recipe_key(opts, data)
    run = root / key
    if opts.tensorboard is None:
        opts = replace(opts, tensorboard=str(run / "tensorboard"))
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock"):
        if is_complete(run):
            trained_by = _trained_by(run)
            print(f"reusing the run trained by {trained_by} in {runs.shown(run)}", flush=True)
            return run
        _train_into(run, data, opts, key, by)
    return run


def _trained_by(run: Path) -> str:
    try:
        return str(json.loads((run / "cache.json").read_text())["trained_by"]) or "an earlier call"
    except (OSError, ValueError, KeyError, TypeError):
        return "an earlier call"


def _train_into(run: Path, data: Path, opts: TrainOptions, key: str, by: str) -> None:
    """Train (or finish training) the run of ``key`` in ``run``; the body of a cache miss."""
    # imported here: training pulls in torch and the models, a hit needs neither
    from segtutor.tgs.recipe import has_progress, train

    pinned = run / "data"
    if (run / "config.json").is_file():
        try:
            earlier = json.loads((run / "config.json").read_text())["data"]
        except (OSError, ValueError, KeyError, TypeError):
            earlier = None
        if earlier is None or Path(earlier).resolve() != pinned.resolve():
            # trained on another path (the checkout moved): its folds cannot be resumed
            shutil.rmtree(run)
    resuming = has_progress(run)
    print(
        f"{'continuing' if resuming else 'training'} the run in {runs.shown(run)} "
        f"(no finished run of this recipe and data yet)",
        flush=True,
    )
    run.mkdir(parents=True, exist_ok=True)
    try:
        if not pinned.is_dir():
            _copy_data(data, pinned)
        _write_json(run / "cache.json", {"key": key, "trained_by": by or "an earlier call"})
        train(run, data=pinned, options=opts, resume=True)
    except BaseException:
        if not has_progress(run):
            shutil.rmtree(run, ignore_errors=True)
        raise
