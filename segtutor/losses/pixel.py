"""Pixel-wise losses: binary and multi-class cross-entropy, focal loss (Lin et al., ICCV 2017)
and online hard example mining."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segtutor import checks

from ._inputs import _binary_inputs, _check_reduction, _is_binary, _multiclass_inputs, _reduce


def bce_loss(
    logits: Tensor,
    target: Tensor,
    pos_weight: float | Tensor | None = None,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy on logits ``[B, (1,) H, W]``, target in {0, 1}.

    Uses the stable form ``max(z, 0) - z y + log(1 + exp(-|z|))`` (PyTorch's
    ``binary_cross_entropy_with_logits``), so logits of +-1000 give finite losses and gradients.
    ``pos_weight`` multiplies the loss of positive pixels (e.g. #negatives / #positives).
    """
    _check_reduction(reduction)
    logits, target, valid = _binary_inputs(logits, target, ignore_index)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_pixel = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=pos_weight, reduction="none"
    )
    return _reduce(per_pixel, valid, reduction)


def cross_entropy_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class cross-entropy, logits ``[B, C, H, W]``, labels ``[B, H, W]``.

    ``weight`` ``[C]`` scales the loss of each true class; the mean divides by the summed weights
    of the counted pixels (as ``F.cross_entropy`` does) and is 0 when every pixel is ignored.
    """
    _check_reduction(reduction)
    logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
    w = _class_weights(weight, logits)
    per_pixel = F.cross_entropy(logits, labels, weight=w, reduction="none")
    if reduction != "mean" or w is None:
        return _reduce(per_pixel, valid, reduction)
    den = (w[labels] * valid).sum()
    return (per_pixel * valid).sum() / den.clamp_min(torch.finfo(den.dtype).tiny)


def _class_weights(weight: Tensor | Sequence[float] | None, logits: Tensor) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if w.shape != (logits.shape[1],):
        raise ValueError(
            f"weight must have one entry per class, shape ({logits.shape[1]},), "
            f"got {tuple(w.shape)}"
        )
    return w


def focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float | Tensor | Sequence[float] | None = None,
    gamma: float = 2.0,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al., ICCV 2017), binary or
    multi-class.

    ``p_t`` is the predicted probability of the true class. ``alpha`` is the class-balance
    factor, applied *outside* the log-probability: in the binary case a scalar in [0, 1]
    (``alpha_t = alpha`` for positives and ``1 - alpha`` for negatives); in the multi-class case
    a scalar (a plain multiplier) or one weight per class ``[C]``. ``gamma = 0`` and no alpha
    give the cross-entropy. Mean over counted pixels.
    """
    _check_reduction(reduction)
    checks.number("gamma", gamma, minimum=0.0)
    if _is_binary(logits):
        logits, y, valid = _binary_inputs(logits, target, ignore_index)
        log_pt = -F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if a.ndim != 0 or not 0 <= float(a) <= 1:
                raise ValueError(f"binary alpha must be a scalar in [0, 1], got {alpha!r}")
            alpha_t = a * y + (1 - a) * (1 - y)
        else:
            alpha_t = None
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        log_pt = F.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if a.ndim == 0:
                alpha_t = a
            elif a.shape == (logits.shape[1],):
                alpha_t = a[labels]
            else:
                raise ValueError(
                    f"alpha must be a scalar or have shape ({logits.shape[1]},), "
                    f"got {tuple(a.shape)}"
                )
        else:
            alpha_t = None
    pt = log_pt.exp()
    per_pixel = -((1 - pt).clamp_min(0) ** gamma) * log_pt
    if alpha_t is not None:
        per_pixel = alpha_t * per_pixel
    return _reduce(per_pixel, valid, reduction)


def ohem_loss(
    logits: Tensor,
    target: Tensor,
    keep: float = 0.25,
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = 255,
) -> Tensor:
    """Online hard example mining: mean of the ``keep`` fraction of largest per-pixel losses.

    Per-pixel BCE (binary logits) or cross-entropy (multi-class, optional class ``weight``);
    only the hardest ``ceil(keep * n_valid)`` counted pixels of the batch get a gradient.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    if _is_binary(logits):
        logits, y, valid = _binary_inputs(logits, target, ignore_index)
        per_pixel = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        per_pixel = F.cross_entropy(
            logits, labels, weight=_class_weights(weight, logits), reduction="none"
        )
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return per_pixel.sum() * 0.0
    k = max(1, math.ceil(keep * losses.numel()))
    return losses.topk(k, sorted=False).values.mean()
