"""Input checks and reductions shared by every loss (one place for the error messages)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- input handling


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_reduction(reduction: Any) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _is_binary(logits: Tensor) -> bool:
    """[B, H, W] and [B, 1, H, W] are binary tasks; [B, C, H, W] with C >= 2 is multi-class."""
    if logits.ndim == 3:
        return True
    if logits.ndim == 4:
        return logits.shape[1] == 1
    raise ValueError(
        f"logits must be [B, H, W], [B, 1, H, W] (binary) or [B, C, H, W] (multi-class), "
        f"got shape {tuple(logits.shape)}"
    )


def _binary_inputs(
    logits: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return logits ``[B, H, W]`` (float), target ``[B, H, W]`` in {0, 1} (logits' dtype,
    0 at ignored pixels) and the bool mask of pixels that count."""
    _check_tensor(logits, "logits")
    _check_tensor(target, "target")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim == 4:
        if logits.shape[1] != 1:
            raise ValueError(
                f"binary logits must have one channel, got shape {tuple(logits.shape)}"
            )
        logits = logits[:, 0]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.ndim != 3:
        raise ValueError(
            f"binary logits must be [B, H, W] or [B, 1, H, W], got {tuple(logits.shape)}"
        )
    if target.shape != logits.shape:
        raise ValueError(
            f"target must match logits: got target {tuple(target.shape)} for logits "
            f"{tuple(logits.shape)} ([B, H, W] or [B, 1, H, W] both)"
        )
    target = target.to(logits.device)
    if ignore_index is not None:
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
    if not _all_zero_or_one(target):
        raise ValueError(
            "binary target must hold values in {0, 1}"
            + (f" (or ignore_index={ignore_index})" if ignore_index is not None else "")
        )
    target = target.to(logits.dtype)
    return logits, target, valid


def _all_zero_or_one(values: Tensor) -> bool:
    """Whether every entry of ``values`` is 0 or 1, found with two reductions: on the CPU the
    boolean masks of a plain ``(v != 0) & (v != 1)`` cost more than some losses they guard."""
    if values.dtype == torch.bool or values.numel() == 0:
        return True
    lo, hi = torch.aminmax(values)
    if not (bool(lo >= 0) and bool(hi <= 1)):  # NaN fails here too
        return False
    if not values.is_floating_point():
        return True
    v = values.reshape(-1)
    # on [0, 1], v (1 - v) >= 0 with 0 only at 0 and 1 (no underflow: the smallest float v > 0
    # keeps v (1 - v) = v), so the sum is 0 exactly when every entry is 0 or 1
    fast = v.dtype in (torch.float32, torch.float64)
    spread = torch.dot(v, 1 - v) if fast else (v * (1 - v)).sum()
    return bool(spread == 0)


def _multiclass_inputs(
    logits: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return logits ``[B, C, H, W]``, labels ``[B, H, W]`` (long, 0 at ignored pixels) and the
    bool mask of pixels that count."""
    _check_tensor(logits, "logits")
    _check_tensor(target, "target")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(
            f"multi-class logits must be [B, C, H, W] with C >= 2, got {tuple(logits.shape)}"
        )
    if target.is_floating_point():
        raise TypeError(f"multi-class target must hold integer labels (long), got {target.dtype}")
    b, c, h, w = logits.shape
    if target.shape != (b, h, w):
        raise ValueError(
            f"target must be [B, H, W] = {(b, h, w)} for logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    target = target.to(logits.device).long()
    if ignore_index is not None:
        valid = target != ignore_index
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
    if target.numel() == 0:  # aminmax has no value on an empty batch, and no label is wrong
        return logits, target, valid
    lo, hi = torch.aminmax(target.masked_fill(~valid, 0) if ignore_index is not None else target)
    if bool(lo < 0) or bool(hi >= c):  # the mask of bad labels only to name one
        label = int(target[((target < 0) | (target >= c)) & valid][0])
        extra = f" other than ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(f"target has label {label}{extra}; expected labels in [0, {c})")
    return logits, target.masked_fill(~valid, 0), valid


def _no_pixels(x: Tensor) -> Tensor:
    """The loss of a batch without pixels: 0, on ``x``'s graph so ``backward()`` still runs."""
    return x.sum() * 0.0


def _reduce(per_pixel: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Mean over valid pixels (0, not NaN, when there are none), sum, or the map with 0 at
    ignored pixels."""
    per_pixel = per_pixel * valid
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    return per_pixel.sum() / valid.sum().clamp_min(1)
