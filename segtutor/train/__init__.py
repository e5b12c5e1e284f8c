"""Training: the loop as functions (:func:`train_one_epoch`, :func:`evaluate`, in
:mod:`.loop`), the :class:`Trainer` that adds the bookkeeping, learning-rate schedules and the
LR range test, checkpoints and resumable fits (:mod:`.slices`), snapshot ensembles and
DistributedDataParallel helpers."""

from __future__ import annotations

from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .ensemble import SnapshotEnsemble
from .loop import evaluate, train_one_epoch, train_step
from .schedules import (
    LRRangeResult,
    SnapshotSaver,
    cosine_warm_restarts,
    cycle_ends,
    fit_cosine,
    lr_range_test,
    lr_sequence,
    one_cycle,
    poly_lr,
    step_lr,
)
from .slices import ResumePoints, fit_resumable
from .trainer import Callback, DeviceLoader, NonFiniteLossError, Trainer

__all__ = [
    "Callback",
    "DeviceLoader",
    "LRRangeResult",
    "NonFiniteLossError",
    "ResumePoints",
    "SnapshotEnsemble",
    "SnapshotSaver",
    "Trainer",
    "atomic_save",
    "cosine_warm_restarts",
    "cycle_ends",
    "evaluate",
    "fit_cosine",
    "fit_resumable",
    "load_checkpoint",
    "lr_range_test",
    "lr_sequence",
    "one_cycle",
    "poly_lr",
    "save_checkpoint",
    "step_lr",
    "train_one_epoch",
    "train_step",
]
