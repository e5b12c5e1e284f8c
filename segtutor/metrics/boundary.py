"""Accuracy near object outlines: the boundary band and the trimap measures."""

from __future__ import annotations

import torch
from torch import Tensor

from segtutor import checks
from segtutor.metrics._common import _as_tensor, _check_labels
from segtutor.metrics.binary import _binary_masks, binary_iou


def boundary_band(labels: Tensor, width: int) -> Tensor:
    """Pixels near a label change: bool, the shape of ``labels`` (``[N, H, W]`` or ``[H, W]``).

    A pixel is in the band when a pixel of another label lies within ``width`` px of it in the
    chessboard distance (its ``(2 width + 1)``-square window holds another label), so the band is
    ``width`` px deep on each side of every boundary. Image borders are not boundaries. This is
    the region of the *trimap* evaluation (Kohli et al., IJCV 2009) that DeepLab used to show
    what a CRF gains at object outlines (Chen et al., ICLR 2015).
    """
    labels = _as_tensor(labels, "labels")
    width = checks.positive_int("width", width)  # pixels
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be [N, H, W] or [H, W], got shape {tuple(labels.shape)}")
    if labels.dtype != torch.bool:
        _check_labels(labels, "labels")
    x = labels.reshape(-1, 1, *labels.shape[-2:]).double()  # exact for any int32 label
    k = 2 * width + 1
    # max-pooling pads with -inf, so the border adds no label
    high = torch.nn.functional.max_pool2d(x, k, stride=1, padding=width)
    low = -torch.nn.functional.max_pool2d(-x, k, stride=1, padding=width)
    return ((high != x) | (low != x)).reshape(labels.shape)


def trimap_target(target: Tensor, width: int, ignore_index: int = 255) -> Tensor:
    """``target`` ``[N, H, W]`` with every pixel outside its :func:`boundary_band` set to
    ``ignore_index``: feed it to :class:`ConfusionMatrix` for the metrics near the boundaries.
    Pixels already equal to ``ignore_index`` stay ignored (and count as a label for the band)."""
    target = _as_tensor(target, "target")
    band = boundary_band(target, width)
    return torch.where(band, target, torch.full_like(target, ignore_index))


def trimap_iou(pred: Tensor, target: Tensor, width: int, empty: float = 1.0) -> Tensor:
    """Per-image IoU ``[N]`` (float64) of binary masks ``[N, H, W]`` counted only inside the
    band of ``width`` px around the **true** mask's boundary (:func:`boundary_band`).

    Errors far from the true outline do not count: this measures how well the outline is drawn,
    next to :func:`binary_iou`, which measures the whole region. A true mask without a boundary
    (empty or full) has an empty band, and its trimap IoU is ``empty``. ``N = 0`` images give
    the empty ``[0]``.
    """
    p, t = _binary_masks(pred, target)  # bool [N, H*W]
    n, hw = p.shape[0], _as_tensor(target, "target").shape[-2:]
    band = boundary_band(t.reshape(n, *hw), width).reshape(t.shape)
    return binary_iou((p & band).reshape(n, *hw), (t & band).reshape(n, *hw), empty=empty)
