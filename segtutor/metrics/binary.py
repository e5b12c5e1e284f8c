"""Binary masks: per-image IoU, the Kaggle TGS Salt metric and its empty-prediction baseline.

The TGS metric scores each image by the fraction of IoU thresholds 0.50, 0.55, ..., 0.95 that
its IoU exceeds (strictly), an empty prediction of an empty mask scoring 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from segtutor.metrics._common import _as_tensor, check_same_shape

# Thresholds as integer twentieths (10/20 = 0.50 ... 19/20 = 0.95) so that "IoU > t" can be
# decided in exact integer arithmetic: an IoU of exactly 3/5 is not above 0.60.
_TWENTIETHS = torch.arange(10, 20, dtype=torch.int64)
TGS_THRESHOLDS: tuple[float, ...] = tuple(k / 20 for k in range(10, 20))
"""The ten IoU thresholds of the TGS metric: 0.50, 0.55, ..., 0.95."""


def _binary_masks(pred: Any, target: Any) -> tuple[Tensor, Tensor]:
    """Validate two batches of binary masks and return them as bool ``[N, H*W]``."""
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    check_same_shape(pred.shape, target.shape)
    if pred.ndim == 4 and pred.shape[1] == 1:
        pred, target = pred[:, 0], target[:, 0]
    if pred.ndim != 3:
        raise ValueError(
            f"masks must be [N, H, W] (or [N, 1, H, W]), got shape {tuple(pred.shape)}"
        )
    for name, m in (("pred", pred), ("target", target)):
        if m.dtype != torch.bool and ((m != 0) & (m != 1)).any():
            raise ValueError(
                f"{name} must be a binary mask with values in {{0, 1}}; threshold probabilities "
                "(p > 0.5) or logits (z > 0) first"
            )
    n, k = pred.shape[0], pred.shape[1] * pred.shape[2]  # k, not -1: N = 0 leaves -1 unknown
    return pred.reshape(n, k).bool(), target.to(pred.device).reshape(n, k).bool()


def _intersection_union(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image ``|A and B|`` and ``|A or B|`` (int64 ``[N]``) of binary masks ``[N, H, W]``."""
    p, t = _binary_masks(pred, target)
    if p.device.type == "cpu" and hasattr(np, "bitwise_count"):
        # On the CPU, PyTorch (and NumPy's count_nonzero(axis=...)) reduce bool tensors through
        # an element-wise cast. Packing 8 pixels per byte and counting the bits of whole 64-bit
        # words reads each mask once and works on arrays 8x smaller (benchmarks/bench_losses.py).
        # Rows are padded with zero bits to whole words.
        n, k = p.shape
        nbytes = (k + 7) // 8
        # only the padding needs zeros (np.zeros would write all of it before packbits does)
        words = np.empty((2, n, (k + 63) // 64 * 8), dtype=np.uint8)
        words[:, :, nbytes:] = 0
        words[0, :, :nbytes] = np.packbits(p.numpy(), axis=1)
        words[1, :, :nbytes] = np.packbits(t.numpy(), axis=1)
        pw, tw = words.view(np.uint64)
        inter = np.bitwise_count(pw & tw).sum(1, dtype=np.int64)
        union = np.bitwise_count(pw | tw).sum(1, dtype=np.int64)
        return torch.from_numpy(inter), torch.from_numpy(union)
    return _intersection_union_torch(p, t)


def _intersection_union_torch(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The same counts with PyTorch ops on bool ``[N, K]`` (any device)."""
    return (p & t).sum(1), (p | t).sum(1)  # union = |A| + |B| - |A and B|, never |A| + |B|


def binary_iou(pred: Tensor, target: Tensor, empty: float = 1.0) -> Tensor:
    """Per-image IoU ``[N]`` (float64) of binary masks ``[N, H, W]`` (bool or 0/1 values).

    Two empty masks agree perfectly; their IoU (0/0) is reported as ``empty`` (default 1, as in
    the TGS metric). Vectorised over images; ``N = 0`` images give the empty ``[0]``.
    """
    inter, union = _intersection_union(pred, target)
    iou = inter.double() / union.clamp_min(1).double()
    return torch.where(union > 0, iou, torch.full_like(iou, float(empty)))


def tgs_scores(pred_masks: Tensor, true_masks: Tensor) -> Tensor:
    """Per-image TGS score ``[N]`` (float64): the fraction of thresholds 0.50..0.95 (step 0.05)
    that the image's IoU exceeds strictly; 1 when both masks are empty, 0 when exactly one is.
    ``N = 0`` images give the empty ``[0]``."""
    inter, union = _intersection_union(pred_masks, true_masks)
    k = _TWENTIETHS.to(inter.device)
    # IoU > k/20  <=>  20 * inter > k * union, exact in integers; both empty: 0 > 0 is False,
    # so that case is set to 1 explicitly. One empty: inter = 0, never above a threshold.
    hits = (20 * inter[:, None]) > (k[None, :] * union[:, None])
    scores = hits.double().mean(1)
    return torch.where(union == 0, torch.ones_like(scores), scores)


def tgs_map(pred_masks: Tensor, true_masks: Tensor) -> float:
    """The Kaggle TGS Salt metric: mean over images of :func:`tgs_scores`.

    Args:
        pred_masks: predicted binary masks ``[N, H, W]`` (bool or 0/1).
        true_masks: true binary masks ``[N, H, W]``.

    Raises ValueError when the batch is empty (``N = 0``): the mean over no images is undefined.
    """
    scores = tgs_scores(pred_masks, true_masks)
    if scores.numel() == 0:
        raise ValueError(
            "tgs_map: the batch is empty (N=0 images); the mean over no images is undefined"
        )
    return float(scores.mean())


def empty_prediction_map(true_masks: Tensor) -> float:
    """The TGS mAP of predicting "no salt" for every image ``[N, H, W]``: the share of empty
    masks, since an empty prediction scores 1 on an empty mask and 0 on any other."""
    true_masks = _as_tensor(true_masks, "true_masks")
    return tgs_map(torch.zeros_like(true_masks, dtype=torch.bool), true_masks)
