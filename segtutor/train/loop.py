"""The training loop as plain functions: one step, one epoch, one evaluation.

This is the whole of training, the way torchvision's ``references/segmentation/train.py`` and
d2l's ``train_ch13`` write it::

    for epoch in range(1, epochs + 1):
        train_loss = train_one_epoch(model, criterion, optimizer, train_loader, device,
                                     epoch=epoch)
        scores = evaluate(model, val_loader, criterion, num_classes, device)

:class:`segtutor.train.Trainer` calls these same functions and adds the bookkeeping around them
(schedules, best score, early stopping, checkpoints, loggers).

The criterion takes the model's whole output, ``criterion(output, masks)``: a tensor, or in
training mode ``{"out": ..., "aux": ...}`` (see :mod:`segtutor.models.outputs`); a plain loss
wrapped in :class:`segtutor.losses.WithAuxiliary` reads such a dict. Binary tasks: logits
``[B, 1, H, W]``, float masks ``[B, H, W]``; multi-class: logits ``[B, C, H, W]``, long masks
``[B, H, W]`` with 255 = ignore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from segtutor.metrics import ConfusionMatrix, tgs_map
from segtutor.models.outputs import main_output
from segtutor.progress import bar, enabled
from segtutor.train import distributed as dist_utils

__all__ = [
    "NonFiniteLossError",
    "amp_context",
    "amp_dtype",
    "check_shapes",
    "evaluate",
    "predict",
    "predict_labels",
    "progress_bar",
    "to_device",
    "train_one_epoch",
    "train_step",
]

Criterion = Callable[[Any, Tensor], Tensor]

#: the metrics :func:`evaluate` reports from the confusion matrix
CM_METRICS = ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "frequency_weighted_iou", "dice")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def progress_bar(iterable: Iterable[Any], progress: bool, **kwargs: Any) -> Iterable[Any]:
    """:func:`segtutor.progress.bar` over ``iterable`` when ``progress``, else ``iterable`` itself.

    Not a hidden bar: ``tqdm.auto`` calls ``iter()`` on its iterable as it is made, and a
    DataLoader's iterator draws a seed from its generator (or torch's global one) when created,
    so a bar changes the random numbers that follow; with this, they depend on ``progress``
    only, as they always have, not on ``SEGTUTOR_PROGRESS``.
    """
    return bar(iterable, show=progress, **kwargs) if progress else iterable


def to_device(
    batch: Any, device: torch.device, channels_last: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``(images, masks)``, images alone, or ``{"image", "mask"}`` -> tensors on ``device``.

    Images ``[B, C, H, W]`` (NHWC in memory with ``channels_last``), masks ``[B, H, W]`` or None.
    """
    if isinstance(batch, Tensor):
        x, y = batch, None
    elif isinstance(batch, Mapping):
        x, y = batch["image"], batch.get("mask")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        raise TypeError(
            f"a batch must be (images, masks), images alone or a dict; got {type(batch).__name__}"
        )
    # from pinned host memory a non-blocking copy overlaps with compute on CUDA
    non_blocking = device.type == "cuda"
    x = x.to(device, non_blocking=non_blocking)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if y is not None:
        y = y.to(device, non_blocking=non_blocking)
    return x, y


def amp_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def fused_option(device: torch.device | str) -> bool | None:
    """The ``fused`` argument of Adam/AdamW for parameters trained on ``device``: True on CUDA
    (one kernel updates every parameter instead of a few small kernels per tensor), None
    elsewhere (PyTorch's own choice)."""
    return True if torch.device(device).type == "cuda" else None


def amp_dtype(amp: str | bool | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device``: ``"auto"``/``True`` is bf16 on
    CUDA where supported, else fp16 (which needs a GradScaler), and off on the CPU (autocast
    rarely pays off for convolutions there); ``"bf16"``, ``"fp16"`` (CUDA only); ``False``/
    ``None``/``"off"``: None."""
    cuda = torch.device(device).type == "cuda"
    if amp is False or amp is None or amp == "off":
        return None
    if amp is True or amp == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if not cuda:
            raise ValueError(
                "amp='fp16' needs a CUDA device (GradScaler); use 'bf16' or False on CPU"
            )
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or False, got {amp!r}")


def train_step(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    device: torch.device,
    *,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
) -> Tensor:
    """One optimisation step on ``batch``; returns the detached loss (a tensor: no host sync).

    ``scheduler`` (if given) is stepped after the optimizer: a per-step schedule. ``scaler``: a
    ``GradScaler`` for fp16 autocast (``amp_dtype=torch.float16``); ``grad_clip``: clip the
    gradient norm to this value.
    """
    x, y = to_device(batch, device, channels_last)
    if y is None:
        raise ValueError("training batches must contain masks: (images, masks)")
    # the last step's gradients are freed before this step's activations are allocated, and the
    # logits are not kept alive through backward
    optimizer.zero_grad(set_to_none=True)
    with amp_context(device, amp_dtype):
        loss = criterion(model(x), y)
    if scaler is not None and scaler.is_enabled():  # fp16: scaled loss, inf steps skipped
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def _epoch_mean(losses: list[Tensor], epoch: int) -> float:
    """The mean of an epoch's step losses, read from the device once, at the end of the epoch.

    Raises :class:`NonFiniteLossError` naming the first step whose loss is NaN or infinite.
    """
    # one transfer for the whole epoch; the float64 sum of the float32 values is the sum the
    # per-step reading used to make
    values = torch.stack([loss.float() for loss in losses]).cpu().double()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        step = int(bad[0, 0])
        raise NonFiniteLossError(
            f"loss is {values[step].tolist()} at epoch {epoch}, step {step} of the epoch; lower "
            "the learning rate, check the inputs for NaN/inf, or clip gradients"
        )
    return values.sum().tolist()


def train_one_epoch(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Any],
    device: torch.device | str,
    *,
    epoch: int = 1,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress: bool = False,
    log_every: int = 10,
    on_step: Callable[[Tensor], None] | None = None,
) -> float:
    """One pass over ``loader`` with :func:`train_step`; returns the mean loss over its batches.

    Args:
        model: in training mode here; returns logits ``[B, C, H, W]`` or a dict.
        criterion: ``criterion(output, masks) -> scalar``.
        loader: batches of ``(images [B, C, H, W], masks [B, H, W])``.
        epoch: 1-based, for a DistributedSampler's shuffle and the error message.
        scheduler: stepped after every step (a per-step schedule), or None.
        progress: a progress bar showing the loss every ``log_every`` steps.
        on_step: called with each step's detached loss.

    Raises :class:`NonFiniteLossError` naming the step whose loss is NaN or infinite, at the end
    of the epoch: the losses stay on the device until then, so no step waits for the host to read
    its loss. Under torch.distributed the mean is over every rank's batches.
    """
    device = torch.device(device)
    model.train()
    dist_utils.set_epoch(loader, epoch)
    show = enabled(progress)
    steps = progress_bar(loader, progress, desc=f"epoch {epoch} train")
    # the step losses stay on the device until the epoch ends: reading one per step would make
    # the host wait for the GPU at every step (a progress bar still reads one now and then)
    losses: list[Tensor] = []
    for i, batch in enumerate(steps):
        loss = train_step(
            model,
            criterion,
            optimizer,
            batch,
            device,
            scheduler=scheduler,
            scaler=scaler,
            amp_dtype=amp_dtype,
            grad_clip=grad_clip,
            channels_last=channels_last,
        )
        losses.append(loss)
        if on_step is not None:
            on_step(loss)
        if show and (i + 1) % log_every == 0:
            steps.set_postfix(
                loss=f"{float(loss):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}"
            )
    if not losses:
        raise ValueError("the training loader produced no batches")
    return dist_utils.reduce_mean(_epoch_mean(losses, epoch), len(losses), device)


def check_shapes(logits: Tensor, target: Tensor, num_classes: int) -> None:
    """Raise ValueError when logits and masks cannot belong together (before any backward):
    binary (``num_classes=1``) logits ``[B, 1, H, W]`` or ``[B, H, W]`` with masks ``[B, H, W]``
    (or the logits' shape), multi-class logits ``[B, C, H, W]`` with long masks ``[B, H, W]``."""
    lg, tg = tuple(logits.shape), tuple(target.shape)
    if num_classes == 1:
        ok = (len(lg) == 4 and lg[1] == 1 and (tg == lg[:1] + lg[2:] or tg == lg)) or (
            len(lg) == 3 and tg == lg
        )
        want = "logits [B, 1, H, W] (or [B, H, W]) with masks [B, H, W]"
    else:
        ok = len(lg) == 4 and lg[1] == num_classes and tg == lg[:1] + lg[2:]
        want = f"logits [B, {num_classes}, H, W] with masks [B, H, W]"
    if not ok:
        raise ValueError(
            f"model output {lg} does not match target {tg}: expected {want} "
            f"(num_classes={num_classes})"
        )
    if num_classes > 1 and target.dtype != torch.long:
        raise TypeError(f"multi-class masks must be int64 (torch.long), got {target.dtype}")


def predict_labels(logits: Tensor, num_classes: int, threshold: float = 0.0) -> Tensor:
    """Logits -> label map ``[B, H, W]`` (long): binary (``num_classes=1``, logits
    ``[B, 1, H, W]`` or ``[B, H, W]``) ``logits > threshold`` (0 = probability 0.5), else
    ``argmax`` over ``[B, C, H, W]``."""
    if num_classes == 1:
        if logits.ndim == 4 and logits.shape[1] == 1:
            logits = logits[:, 0]
        return (logits > threshold).long()
    return logits.argmax(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    criterion: Criterion | None,
    num_classes: int,
    device: torch.device | str,
    *,
    threshold: float = 0.0,
    ignore_index: int = 255,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Loss and segmentation metrics of ``model`` (in eval mode) over ``loader``.

    Returns ``{"loss", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou",
    "frequency_weighted_iou", "dice"}`` (no ``"loss"`` when ``criterion`` is None) and, for a
    binary task (``num_classes=1``), ``"tgs_map"``: the metrics of the confusion matrix summed
    over every batch (:class:`segtutor.metrics.ConfusionMatrix`), the loss a mean over batches.
    Under torch.distributed the counts are summed over ranks first, so every rank gets the
    metrics of the whole data set.
    """
    device = torch.device(device)
    binary = num_classes == 1
    model.eval()
    cm = ConfusionMatrix(2 if binary else num_classes, ignore_index=ignore_index)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_batches = 0
    tgs_sum, n_images = 0.0, 0
    for batch in progress_bar(loader, progress, desc="evaluate", leave=False):
        x, y = to_device(batch, device, channels_last)
        if y is None:
            raise ValueError("evaluation batches must contain masks: (images, masks)")
        with amp_context(device, amp_dtype):
            output = model(x)
            loss = criterion(output, y) if criterion is not None else None
        if loss is not None:
            loss_sum += loss.double()
        n_batches += 1
        pred = predict_labels(main_output(output).float(), num_classes, threshold)
        target = y.long()
        if target.ndim == 4:
            target = target[:, 0]
        cm.update(pred, target)
        if binary:
            tgs_sum += float(tgs_map(pred, target)) * pred.shape[0]
            n_images += pred.shape[0]
    if n_batches == 0:
        raise ValueError("the evaluation loader produced no batches")
    cm.all_reduce()
    metrics = cm.compute()
    out = (
        {}
        if criterion is None
        else {"loss": dist_utils.reduce_mean(float(loss_sum), n_batches, device)}
    )
    out.update({key: float(metrics[key]) for key in CM_METRICS if key in metrics})
    if binary:
        out["tgs_map"] = dist_utils.reduce_mean(tgs_sum, n_images, device)
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str,
    *,
    activation: str | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> Tensor:
    """The main logits ``[N, C, H, W]`` of ``model`` (in eval mode) on the CPU, for every image
    of ``loader`` in loader order; ``activation="sigmoid"``/``"softmax"`` gives probabilities."""
    if activation not in (None, "sigmoid", "softmax"):
        raise ValueError(f"activation must be None, 'sigmoid' or 'softmax', got {activation!r}")
    device = torch.device(device)
    model.eval()
    chunks = []
    for batch in progress_bar(loader, progress, desc="predict", leave=False):
        x, _ = to_device(batch, device, channels_last)
        with amp_context(device, amp_dtype):
            logits = main_output(model(x)).float()
        if activation == "sigmoid":
            logits = logits.sigmoid()
        elif activation == "softmax":
            logits = logits.softmax(dim=1)
        chunks.append(logits.cpu())
    if not chunks:
        raise ValueError("predict() got an empty loader")
    return torch.cat(chunks)
