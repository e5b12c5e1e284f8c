"""The run folder that ``segtutor tgs train`` writes and ``segtutor tgs predict`` reads.

::

    RUN/config.json             the resolved options, the data folder, the fold of every image,
                                the folds trained
    RUN/fold<k>/snapshot_<j>.pt the weights, one file per stage-2 cycle (j = 1, 2, ...)
    RUN/fold<k>/stage1.pt       the weights at the end of stage 1, when a stage 2 follows
                                (not a snapshot: prediction does not use it)
    RUN/fold<k>/history.json    one row per epoch; written last, it marks the fold as finished
    RUN/oof.pt                  out-of-fold probabilities of the trained folds
    RUN/postprocess.json        the threshold, minimum component size and empty-image
                                threshold chosen on them

Every file is read back through one function here, which names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from segtutor.fileio import atomic_write_text
from segtutor.tgs.layout import TGSInputError
from segtutor.tgs.options import TrainOptions


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise TGSInputError(
            f"{path} is missing: is this a run folder written by 'segtutor tgs train'?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TGSInputError(f"{path} is not valid JSON: {err}") from None


_CONFIG_KEYS = {"options": dict, "data": str, "ids": list, "folds": list, "trained_folds": list}

# options added after runs had been written, with the value those runs were trained with: a run
# folder that does not name one was trained without it (its snapshots have no full-res skip)
_BEFORE_OPTION = {"symmetric_lovasz": False, "full_res_skip": False, "zero_init_residual": False}


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN/config.json`` of a run folder, checked; ``"options"`` becomes a :class:`TrainOptions`.

    Raises TGSInputError naming the file and what is wrong: not JSON, not an object, a missing
    or mistyped key, an option this version does not know, an option out of range, a trained
    fold out of range. (A run written by a newer segtutor with new options is refused rather
    than half understood.)
    """
    path = Path(run_dir) / "config.json"
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        raise TGSInputError(f"{path}: expected a JSON object, got a JSON {type(cfg).__name__}")
    for key, kind in _CONFIG_KEYS.items():
        if not isinstance(cfg.get(key), kind):
            raise TGSInputError(
                f"{path}: {key!r} is missing or not a JSON "
                f"{'object' if kind is dict else kind.__name__}"
            )
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(cfg["options"]) - known)
    if unknown:
        raise TGSInputError(f"{path}: unknown option(s) {', '.join(map(repr, unknown))}")
    try:
        opts = TrainOptions(**{**_BEFORE_OPTION, **cfg["options"]})
        opts.validate()
    except (TypeError, ValueError) as err:
        raise TGSInputError(f"{path}: {err}") from None
    trained = cfg["trained_folds"]
    if not trained or not all(
        isinstance(k, int) and not isinstance(k, bool) and 0 <= k < opts.folds for k in trained
    ):
        raise TGSInputError(
            f"{path}: 'trained_folds' must list fold numbers in "
            f"0..{opts.folds - 1}, got {trained!r}"
        )
    return {**cfg, "options": opts}


def _read_postprocess(path: Path) -> dict[str, Any]:
    """``RUN/postprocess.json``: the threshold, minimum component size and empty-image threshold
    chosen at training. A file without ``empty_threshold`` (written before it was searched)
    gets the former fixed rule, 0.5."""
    chosen = _read_json(path)
    threshold = chosen.get("threshold") if isinstance(chosen, dict) else None
    min_size = chosen.get("min_size") if isinstance(chosen, dict) else None
    empty = chosen.get("empty_threshold", 0.5) if isinstance(chosen, dict) else None
    if (
        any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
            for v in (threshold, empty)
        )
        or isinstance(min_size, bool)
        or not isinstance(min_size, int)
        or min_size < 0
    ):
        raise TGSInputError(
            f"{path}: expected an object with 'threshold' and 'empty_threshold' "
            "in [0, 1] and 'min_size' >= 0; train again, or give --threshold, "
            "--min-size and --empty-threshold"
        )
    return {**chosen, "empty_threshold": empty}


# options that may change between the calls of one resumed run: they do not change the models
_RUN_CONTROL = ("train_folds", "progress", "verbose", "tensorboard", "visdom")


def _check_same_run(earlier: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Raise TGSInputError when a resumed run would mix folds of different data or recipes.

    Checked from the most specific cause to the least: the data folder (resolved paths, so
    ``d20`` and ``./d20`` are the same folder), the recipe (a changed ``--n-images`` or
    ``--seed`` is named as such), the images in the folder, the fold assignment.
    """
    if Path(earlier["data"]).resolve() != Path(now["data"]).resolve():
        raise TGSInputError(
            f"--resume: the run folder was trained on {earlier['data']}, not "
            f"{now['data']}; use the same --data or a new --out"
        )
    changed = sorted(
        k
        for k, v in now["options"].items()
        if k not in _RUN_CONTROL and earlier["options"].get(k) != v
    )
    if changed:
        raise TGSInputError(
            "--resume: the recipe differs from the earlier call in "
            f"{', '.join(changed)}; use the same options or a new --out"
        )
    if earlier["ids"] != now["ids"]:
        raise TGSInputError(
            f"--resume: the data folder {now['data']} holds other images than "
            f"when the run was trained ({len(earlier['ids'])} image ids then, "
            f"{len(now['ids'])} now, or in another order); use a new --out"
        )
    if earlier["folds"] != now["folds"]:
        raise TGSInputError(
            "--resume: the fold assignment differs from the earlier call; use a new --out"
        )


def snapshot_paths(fold_dir: str | os.PathLike) -> list[Path]:
    """The ``snapshot_<j>.pt`` files of a fold folder, in cycle order (``j`` as a number, so
    ``snapshot_10`` comes after ``snapshot_9``); other files are ignored. TGSInputError when the
    folder holds none."""
    fold_dir = Path(fold_dir)
    numbered = []
    for path in fold_dir.glob("snapshot_*.pt"):
        number = path.stem[len("snapshot_") :]
        if number.isascii() and number.isdecimal():
            numbered.append((int(number), path))
    if not numbered:
        raise TGSInputError(f"{fold_dir} has no snapshot_<number>.pt files")
    return [path for _, path in sorted(numbered)]
