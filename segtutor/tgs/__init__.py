"""The TGS Salt Identification workflow, end to end, as thin glue over the package.

Every step calls the tested building blocks of ``segtutor``: the Kaggle layout and RLE from
:mod:`segtutor.data`, the metric from :mod:`segtutor.metrics`, the losses from
:mod:`segtutor.losses`, the ResNet34 U-Net from :mod:`segtutor.models`, the trainer, schedules and
snapshot ensemble from :mod:`segtutor.train`, flip TTA from :mod:`segtutor.train.tta` and
small-component removal from :mod:`segtutor.postprocess`. What lives here is only what is
specific to the competition, one concern per module (each imports only those above it):

- :mod:`~segtutor.tgs.layout`: the data in memory, folds, 101 <-> 128, :class:`TGSInputError`;
- :mod:`~segtutor.tgs.options`: :class:`TrainOptions`, every option of the recipe written once
  (the ``segtutor tgs train`` command line is generated from it);
- :mod:`~segtutor.tgs.postprocessing`: threshold, small components, the empty-image rule, and
  their search on out-of-fold predictions;
- :mod:`~segtutor.tgs.submission`: writing, validating and scoring ``submission.csv``;
- :mod:`~segtutor.tgs.run`: the run folder (``config.json``, snapshots, ``postprocess.json``);
- :mod:`~segtutor.tgs.inference`: the models of a run, averaged with flip TTA, and ``predict``;
- :mod:`~segtutor.tgs.recipe`: the two-stage training of one fold and of all folds (``train``);
- :mod:`~segtutor.tgs.cache`: train once, reuse: a run kept under ``runs/book/<key>``, keyed by
  the recipe, the data and the code (``cached_run``), which the book's chapters share.

Every public name is re-exported here (``from segtutor import tgs; tgs.train(...)``). The
modules are imported on first use of one of their names, so that ``import segtutor.tgs`` and the
command line's parser (built from :mod:`~segtutor.tgs.options`) stay cheap. The command line
(``segtutor tgs synth|train|predict|evaluate``, :mod:`segtutor.cli`) calls these functions and
nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "layout": (
        "MODEL_SIZE",
        "TGS_SIZE",
        "TGSArrays",
        "TGSInputError",
        "from_model_size",
        "load_split",
        "synth",
        "to_model_size",
    ),
    "options": ("TrainOptions",),
    "postprocessing": (
        "ThresholdSearch",
        "default_empty_thresholds",
        "default_min_sizes",
        "default_thresholds",
        "postprocess",
        "remove_small",
        "search_postprocess",
        "search_threshold",
        "suppress_empty",
    ),
    "submission": (
        "SUBMISSION_HEADER",
        "evaluate_submission",
        "find_mask",
        "split_ids",
        "validate_submission",
        "write_submission",
    ),
    "run": ("read_run_config", "snapshot_paths"),
    "inference": ("build", "load_members", "predict", "predict_probs"),
    "recipe": (
        "RESUME_EVERY",
        "WithEmptyImageHead",
        "fit_fold",
        "has_progress",
        "has_salt",
        "resume_files",
        "train",
    ),
    "cache": (
        "cached_run",
        "code_fingerprint",
        "data_fingerprint",
        "default_root",
        "is_complete",
        "recipe_key",
    ),
}
# the workflow's names for two functions of the Kaggle layout module (the same objects)
_ALIASES = {"make_folds": "coverage_folds", "coverage_classes": "coverage_class"}

_HOME = {
    name: (f"{__name__}.{module}", name) for module, names in _EXPORTS.items() for name in names
}
_HOME.update({name: ("segtutor.data.tgs", target) for name, target in _ALIASES.items()})


def __getattr__(name: str) -> Any:
    if name in _HOME:
        module, attribute = _HOME[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
