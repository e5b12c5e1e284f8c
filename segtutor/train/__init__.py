"""Training: the :class:`Trainer`, learning-rate schedules and the LR range test, checkpoints,
snapshot ensembles and DistributedDataParallel helpers."""

from __future__ import annotations

from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .trainer import Callback, NonFiniteLossError, Trainer

__all__ = ["Trainer", "Callback", "NonFiniteLossError", "atomic_save", "save_checkpoint",
           "load_checkpoint"]
