"""The per-epoch bookkeeping of :class:`segtutor.train.Trainer`, as small functions of plain
values: callbacks, "best" and early stopping, the epoch-level scheduler step, the printed
one-line summary, what is sent to the logger (scalars, histograms, a prediction grid), and the
Trainer's argument checks.

Kept apart from the Trainer so that each step of *print, plot, save, update* reads on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segtutor import checks
from segtutor.models.outputs import main_output
from segtutor.monitor.images import log_prediction_images
from segtutor.train import loop

if TYPE_CHECKING:  # only for the hints: the trainer imports this module
    from segtutor.train.trainer import Trainer

__all__ = [
    "Callback",
    "check_trainer_arguments",
    "epoch_summary",
    "improved",
    "log_epoch_images",
    "log_epoch_scalars",
    "step_epoch_scheduler",
]


class Callback:
    """Hooks called by :class:`~segtutor.train.Trainer`; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (``mode`` ``"max"`` or
    ``"min"``); any value beats no best (``None``)."""
    if best is None:
        return True
    if mode == "max":
        return value > best + min_delta
    return value < best - min_delta


def step_epoch_scheduler(scheduler: Any, row: Mapping[str, float], monitor: str) -> None:
    """Step a per-epoch LR scheduler; ``ReduceLROnPlateau`` gets the monitored metric."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(row[monitor])
    else:
        scheduler.step()


def epoch_summary(row: Mapping[str, float], epochs: int, monitor: str) -> str:
    """The one-line summary of an epoch: the losses, the headline metrics, the monitored one,
    the learning rate and the time (seconds)."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    shown = ("train_loss", "val_loss", "val_mean_iou", "val_tgs_map", monitor)
    for key in dict.fromkeys(shown):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['time']:.1f} s")
    return "  ".join(parts)


def log_epoch_scalars(
    logger: Any, row: Mapping[str, float], module: nn.Module | None = None
) -> None:
    """Every value of the epoch's row under ``epoch/`` at step ``row["epoch"]``; with a
    ``module``, a histogram of each of its parameters under ``weights/``."""
    epoch = int(row["epoch"])
    logger.log_scalars({k: v for k, v in row.items() if k != "epoch"}, step=epoch, prefix="epoch/")
    if module is not None:
        for name, p in module.named_parameters():
            logger.log_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)


@torch.no_grad()
def log_epoch_images(
    logger: Any,
    model: nn.Module,
    batch: Any,
    epoch: int,
    *,
    num_classes: int,
    device: torch.device,
    threshold: float = 0.0,
    ignore_index: int = 255,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    limit: int = 4,
) -> None:
    """Log an image / target / prediction grid of the first ``limit`` items of ``batch``
    (``(images [B, C, H, W], masks [B, H, W])``), the model in eval mode; binary tasks
    (``num_classes=1``) also show the probability map. ``threshold`` is on the logit."""
    x, y = loop.to_device(batch, device, channels_last)
    x, y = x[:limit], (None if y is None else y[:limit])
    model.eval()
    with loop.amp_context(device, amp_dtype):
        logits = main_output(model(x)).float()
    binary = num_classes == 1
    probs = (logits[:, 0] if logits.ndim == 4 else logits).sigmoid() if binary else None
    labels = loop.predict_labels(logits, num_classes, threshold).cpu()
    classes = 2 if binary else num_classes
    log_prediction_images(
        logger, x, y, labels, epoch, classes, probs=probs, ignore_index=ignore_index
    )


def check_trainer_arguments(
    model: Any,
    criterion: Any,
    optimizer: Any,
    num_classes: Any,
    scheduler_interval: Any,
    early_stopping: Any,
    log_every: Any,
) -> None:
    """The :class:`~segtutor.train.Trainer`'s argument checks: TypeError/ValueError naming
    the argument."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(criterion):
        raise TypeError("criterion must be callable: criterion(output, target) -> loss")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    checks.positive_int("num_classes", num_classes)  # 1 = binary
    checks.one_of("scheduler_interval", scheduler_interval, ("epoch", "step"))
    if early_stopping is not None:
        checks.positive_int("early_stopping", early_stopping)  # patience, in epochs
    checks.positive_int("log_every", log_every)
