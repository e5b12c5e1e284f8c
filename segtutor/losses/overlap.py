"""Region-overlap losses: soft Dice (Milletari et al., 3DV 2016), Tversky (Salehi et al., MLMI
2017) and the soft Jaccard loss, all built on :func:`overlap_stats`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segtutor import checks

from ._inputs import _binary_inputs, _is_binary, _multiclass_inputs, _no_pixels


def overlap_stats(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None = 255,
    per_image: bool = False,
    squared: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft intersection ``I = sum p t``, prediction mass ``P = sum p`` (``sum p^2`` if
    ``squared``) and target mass ``T = sum t`` over the counted pixels.

    ``p`` = sigmoid (binary, one class) or softmax (multi-class, ``C`` classes) of the logits;
    ``t`` is the (one-hot) target. Shapes ``[B, K]`` with ``per_image`` else ``[K]``, K = 1 or C.
    """
    if _is_binary(logits):
        logits, t, valid = _binary_inputs(logits, target, ignore_index)
        p = torch.sigmoid(logits)[:, None]
        t = t[:, None]
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        p = logits.softmax(1)
        t = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    v = valid[:, None].to(p.dtype)
    p, t = p * v, t * v
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (p * t).sum(dims)
    pred_mass = (p * p if squared else p).sum(dims)
    return inter, pred_mass, t.sum(dims)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    squared: bool = False,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Soft Dice loss ``1 - mean_k (2 I_k + s) / (P_k + T_k + s)`` on logits.

    Binary: the foreground class only. Multi-class: the mean over all ``C`` classes of the
    softmax. ``squared`` uses ``sum p^2 + sum t^2`` in the denominator (Milletari et al.,
    3DV 2016). ``per_image`` computes Dice per image and class, then averages; otherwise the
    sums run over the whole batch. ``smooth`` keeps empty masks finite (an empty target
    predicted empty scores 1).
    """
    checks.number("smooth", smooth, minimum=0.0)
    inter, pred_mass, true_mass = overlap_stats(logits, target, ignore_index, per_image, squared)
    if logits.numel() == 0:  # the mean over no images would be NaN
        return _no_pixels(inter)
    dice = (2 * inter + smooth) / (pred_mass + true_mass + smooth).clamp_min(1e-12)
    return 1 - dice.mean()


def tversky_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Tversky loss ``1 - mean_k (I + s) / (I + alpha FP + beta FN + s)`` (Salehi et al., 2017).

    ``FP = P - I``, ``FN = T - I``. ``alpha = beta = 1`` is the soft Jaccard and
    ``alpha = beta = 0.5`` is Dice (Dice's smoothing ``s`` corresponds to ``s / 2`` here);
    ``beta > alpha`` penalises missed foreground more than false alarms.
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
        checks.number(name, value, minimum=0.0)
    inter, pred_mass, true_mass = overlap_stats(logits, target, ignore_index, per_image)
    if logits.numel() == 0:  # the mean over no images would be NaN
        return _no_pixels(inter)
    den = inter + alpha * (pred_mass - inter) + beta * (true_mass - inter) + smooth
    return 1 - ((inter + smooth) / den.clamp_min(1e-12)).mean()


def jaccard_loss(
    logits: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Soft Jaccard (IoU) loss ``1 - (I + s) / (P + T - I + s)``: :func:`tversky_loss` with
    ``alpha = beta = 1``. Its gradient swings with the size of the masks; see the chapter."""
    return tversky_loss(logits, target, 1.0, 1.0, smooth, per_image, ignore_index)
