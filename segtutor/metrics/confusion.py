"""Confusion-matrix metrics (FCN paper, Long et al., CVPR 2015), the streaming
:class:`ConfusionMatrix` and the constant-prediction baseline.

``cm`` is ``[C, C]`` with rows = ground truth and columns = prediction; see
:mod:`segtutor.metrics` for the formulas and how undefined (NaN) per-class values are averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from segtutor import checks
from segtutor.metrics._common import _as_tensor, _check_labels, check_same_shape


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """Confusion matrix ``[C, C]`` (int64, rows = ground truth, columns = prediction).

    Args:
        pred: predicted labels, any shape (e.g. ``[B, H, W]``), integer or bool dtype.
        target: true labels, same shape as ``pred``.
        num_classes: ``C``; labels must lie in ``[0, C)``.
        ignore_index: label in ``target`` whose pixels are not counted (e.g. 255), or None.

    Built with a single ``torch.bincount`` over ``target * C + pred``: no loop over pixels or
    classes. Raises ValueError for mismatched shapes or labels outside ``[0, C)``.
    """
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    checks.positive_int("num_classes", num_classes)
    check_same_shape(pred.shape, target.shape)
    _check_labels(pred, "pred")
    _check_labels(target, "target")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).to(pred.device).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            extra = f" other than ignore_index={ignore_index}" if ignore_index is not None else ""
            raise ValueError(
                f"target has label {bad}{extra}; expected labels in [0, {num_classes})"
            )
        lo, hi = int(pred.min()), int(pred.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"pred has label {bad}; expected labels in [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_cm(cm: Tensor) -> Tensor:
    cm = _as_tensor(cm, "cm")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square [C, C] matrix, got shape {tuple(cm.shape)}")
    if (cm < 0).any():
        raise ValueError("cm must hold non-negative counts")
    return cm.double()


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with NaN where den == 0 (an undefined per-class value, not a zero score)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def _nanmean(x: Tensor) -> float:
    valid = ~torch.isnan(x)
    return float(x[valid].mean()) if valid.any() else float("nan")


def iou_per_class(cm: Tensor) -> Tensor:
    """IoU of each class ``[C]`` (float64): ``n_ii / (t_i + p_i - n_ii)``; NaN if the class is
    absent from both ground truth and prediction."""
    cm = _check_cm(cm)
    tp = cm.diagonal()
    return _ratio(tp, cm.sum(1) + cm.sum(0) - tp)


def recall_per_class(cm: Tensor) -> Tensor:
    """Per-class recall ``[C]`` = ``n_ii / t_i`` (the "class accuracy" of the FCN paper);
    NaN for classes absent from the ground truth."""
    cm = _check_cm(cm)
    return _ratio(cm.diagonal(), cm.sum(1))


def precision_per_class(cm: Tensor) -> Tensor:
    """Per-class precision ``[C]`` = ``n_ii / p_i``; NaN for classes never predicted."""
    cm = _check_cm(cm)
    return _ratio(cm.diagonal(), cm.sum(0))


def dice_per_class(cm: Tensor) -> Tensor:
    """Per-class Dice/F1 ``[C]`` = ``2 n_ii / (t_i + p_i)``; NaN if absent from both."""
    cm = _check_cm(cm)
    return _ratio(2 * cm.diagonal(), cm.sum(1) + cm.sum(0))


def pixel_accuracy(cm: Tensor) -> float:
    """Fraction of (non-ignored) pixels labelled correctly; NaN for an empty matrix."""
    cm = _check_cm(cm)
    total = cm.sum()
    return float(cm.diagonal().sum() / total) if total > 0 else float("nan")


def mean_pixel_accuracy(cm: Tensor) -> float:
    """Mean over ground-truth classes of per-class recall ``n_ii / t_i`` (FCN's "mean accuracy").

    It is recall, not precision: the denominator is the number of pixels that truly belong to
    the class (a row sum of ``cm``).
    """
    return _nanmean(recall_per_class(cm))


def mean_iou(cm: Tensor) -> float:
    """Mean IoU over classes present in the ground truth or the prediction (macro average)."""
    return _nanmean(iou_per_class(cm))


def frequency_weighted_iou(cm: Tensor) -> float:
    """IoU of each class weighted by its share of ground-truth pixels.

    ``sum_i t_i IoU_i / sum t``.
    """
    cm64 = _check_cm(cm)
    freq = cm64.sum(1)
    total = freq.sum()
    if total == 0:
        return float("nan")
    iou = torch.nan_to_num(iou_per_class(cm64), nan=0.0)  # NaN only where t_i = 0 anyway
    return float((freq * iou).sum() / total)


def dice_coefficient(cm: Tensor) -> float:
    """Mean Dice (F1) over classes present in the ground truth or the prediction."""
    return _nanmean(dice_per_class(cm))


def summary_scores(cm: Tensor) -> dict[str, float]:
    """The five one-number scores of a confusion matrix ``[C, C]`` (rows: truth, columns:
    prediction): ``pixel_accuracy``, ``mean_pixel_accuracy``, ``mean_iou``,
    ``frequency_weighted_iou`` and ``dice`` (each in [0, 1], NaN where undefined)."""
    return {
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_pixel_accuracy": mean_pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
        "frequency_weighted_iou": frequency_weighted_iou(cm),
        "dice": dice_coefficient(cm),
    }


class ConfusionMatrix:
    """Streaming confusion matrix: ``update`` per batch, ``compute`` at the end, ``reset``.

    >>> cmacc = ConfusionMatrix(num_classes=3)
    >>> cmacc.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
    >>> round(cmacc.compute()["pixel_accuracy"], 3)
    0.667

    Counts live on the device of the first update (no host sync per batch). Under
    ``torch.distributed`` each rank accumulates its own shard; call :meth:`all_reduce` once
    before :meth:`compute` to sum the counts over ranks.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = checks.positive_int("num_classes", num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` labels ``[B, H, W]`` (integer), ``target`` labels ``[B, H, W]``."""
        pred = _as_tensor(pred, "pred")
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all ``torch.distributed`` ranks (a no-op when not initialised).

        In place: call it once, after the last update and before compute. Returns self.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics from the counts so far.

        Keys: ``pixel_accuracy``, ``mean_pixel_accuracy``, ``mean_iou``,
        ``frequency_weighted_iou``, ``dice`` (floats) and ``iou_per_class``,
        ``recall_per_class``, ``dice_per_class`` (float64 tensors ``[C]`` on the CPU, NaN for
        undefined classes).
        """
        cm = self.matrix.detach().cpu()
        return {
            **summary_scores(cm),
            "iou_per_class": iou_per_class(cm),
            "recall_per_class": recall_per_class(cm),
            "dice_per_class": dice_per_class(cm),
        }

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def constant_prediction_scores(
    target: Tensor, num_classes: int, label: int | None = None, ignore_index: int | None = 255
) -> dict[str, float]:
    """The scores of the trivial model that predicts one ``label`` at every pixel.

    Every trained result in the book sits beside this baseline: a model whose mean IoU does not
    beat it has learnt nothing a constant could not do.

    Args:
        target: true labels ``[B, H, W]`` (or any shape), long.
        num_classes: ``C``.
        label: the constant prediction; ``None`` takes the most frequent class of ``target``
            (counting no ignored pixel), which for segmentation data is usually the background.
        ignore_index: label of ``target`` whose pixels are not counted, or None.

    Returns ``{"label"}`` and the scores of :func:`summary_scores` (``pixel_accuracy``,
    ``mean_pixel_accuracy``, ``mean_iou``, ``frequency_weighted_iou``, ``dice``), the same
    numbers a trained model's :meth:`ConfusionMatrix.compute` reports, so a table can set the
    baseline beside every column.
    """
    checks.positive_int("num_classes", num_classes)
    target = _as_tensor(target, "target")
    if label is None:
        counted = target if ignore_index is None else target[target != ignore_index]
        if counted.numel() == 0:
            raise ValueError("constant_prediction_scores: target has no counted pixel")
        label = int(torch.bincount(counted.reshape(-1).long(), minlength=num_classes).argmax())
    else:
        label = checks.integer("label", label, 0, num_classes - 1)
    cm = confusion_matrix(torch.full_like(target, label), target, num_classes, ignore_index)
    return {"label": label, **summary_scores(cm)}
