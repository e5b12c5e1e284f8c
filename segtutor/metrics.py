"""Segmentation metrics: everything from one confusion matrix, plus binary IoU and the TGS metric.

The confusion matrix ``cm`` is ``[C, C]`` with **rows = ground truth, columns = prediction**:
``cm[i, j]`` counts pixels of true class ``i`` predicted as ``j``. With ``n_ij = cm[i, j]``,
``t_i = sum_j n_ij`` (pixels of class i) and ``p_j = sum_i n_ij`` (pixels predicted as j), the
metrics of the FCN paper (Long et al., CVPR 2015) are

- pixel accuracy        ``sum_i n_ii / sum_i t_i``
- mean pixel accuracy   ``mean_i n_ii / t_i``                   (per-class *recall*)
- mean IoU              ``mean_i n_ii / (t_i + p_i - n_ii)``
- frequency-weighted IoU ``sum_i t_i * IoU_i / sum_i t_i``
- Dice (F1)             ``mean_i 2 n_ii / (t_i + p_i)``

A class that appears neither in the ground truth nor in the prediction has no IoU or Dice (0/0):
its per-class value is NaN and it is left out of the mean. Mean pixel accuracy averages over the
classes present in the ground truth (recall needs ``t_i > 0``); false positives of a class absent
from the ground truth therefore lower IoU and Dice but not mean pixel accuracy.

Near object outlines: :func:`boundary_band` marks the pixels within a few px of a label change;
:func:`trimap_target` (multi-class, with :class:`ConfusionMatrix`) and :func:`trimap_iou`
(binary) count only those pixels, the *trimap* measure of boundary accuracy.

The Kaggle TGS Salt metric (:func:`tgs_map`) scores each image by the fraction of IoU thresholds
0.50, 0.55, ..., 0.95 that its IoU exceeds (strictly), with an empty prediction of an empty mask
scoring 1 and the mean over images as the result.

Instances (:func:`instance_scores`): two label maps (0 = background, 1..K = objects) are compared
object by object, as in the 2018 Data Science Bowl: a predicted object matches a true one when
their IoU is above a threshold of at least 0.5, which makes every match unique; the matches,
misses and spurious objects give precision, recall, F1, F2 and the mean over thresholds
0.50..0.95 of ``TP / (TP + FP + FN)``.

Empty batches: a per-image metric (:func:`binary_iou`, :func:`tgs_scores`, :func:`trimap_iou`)
of ``N = 0`` images is the empty tensor ``[0]``, one value per image; a mean over images
(:func:`tgs_map`) raises ValueError, since the mean over no images is undefined. A confusion
matrix of zero pixels is all zeros (a count over nothing, so that :class:`ConfusionMatrix` takes
an empty or all-ignored batch), and the metrics of an all-zero matrix are NaN, like every
undefined per-class value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TGS_THRESHOLDS",
    "ConfusionMatrix",
    "InstanceScores",
    "binary_iou",
    "boundary_band",
    "confusion_matrix",
    "constant_prediction_scores",
    "dice_coefficient",
    "dice_per_class",
    "empty_prediction_map",
    "frequency_weighted_iou",
    "instance_scores",
    "iou_per_class",
    "mean_iou",
    "mean_pixel_accuracy",
    "pixel_accuracy",
    "precision_per_class",
    "recall_per_class",
    "tgs_map",
    "tgs_scores",
    "trimap_iou",
    "trimap_target",
]

# Thresholds as integer twentieths (10/20 = 0.50 ... 19/20 = 0.95) so that "IoU > t" can be
# decided in exact integer arithmetic: an IoU of exactly 3/5 is not above 0.60.
_TWENTIETHS = torch.arange(10, 20, dtype=torch.int64)
TGS_THRESHOLDS: tuple[float, ...] = tuple(k / 20 for k in range(10, 20))
"""The ten IoU thresholds of the TGS metric: 0.50, 0.55, ..., 0.95."""


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_labels(x: Tensor, name: str) -> None:
    if x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {x.dtype}; "
            "for logits [B, C, H, W] pass logits.argmax(1), for binary logits (logits > 0).long()"
        )


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
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
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
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
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
            "pixel_accuracy": pixel_accuracy(cm),
            "mean_pixel_accuracy": mean_pixel_accuracy(cm),
            "mean_iou": mean_iou(cm),
            "frequency_weighted_iou": frequency_weighted_iou(cm),
            "dice": dice_coefficient(cm),
            "iou_per_class": iou_per_class(cm),
            "recall_per_class": recall_per_class(cm),
            "dice_per_class": dice_per_class(cm),
        }

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def _binary_masks(pred: Any, target: Any) -> tuple[Tensor, Tensor]:
    """Validate two batches of binary masks and return them as bool ``[N, H*W]``."""
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
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


# --------------------------------------------------------------------------- trivial baselines


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

    Returns ``{"label", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou"}``, computed by the same
    :func:`confusion_matrix` metrics as a trained model's scores.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    target = _as_tensor(target, "target")
    if label is None:
        counted = target if ignore_index is None else target[target != ignore_index]
        if counted.numel() == 0:
            raise ValueError("constant_prediction_scores: target has no counted pixel")
        label = int(torch.bincount(counted.reshape(-1).long(), minlength=num_classes).argmax())
    elif isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ValueError(f"label must be an int in [0, {num_classes}), got {label!r}")
    cm = confusion_matrix(torch.full_like(target, label), target, num_classes, ignore_index)
    return {
        "label": label,
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_pixel_accuracy": mean_pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
    }


def empty_prediction_map(true_masks: Tensor) -> float:
    """The TGS mAP of predicting "no salt" for every image ``[N, H, W]``: the share of empty
    masks, since an empty prediction scores 1 on an empty mask and 0 on any other."""
    true_masks = _as_tensor(true_masks, "true_masks")
    return tgs_map(torch.zeros_like(true_masks, dtype=torch.bool), true_masks)


# --------------------------------------------------------------------------- boundary accuracy


def boundary_band(labels: Tensor, width: int) -> Tensor:
    """Pixels near a label change: bool, the shape of ``labels`` (``[N, H, W]`` or ``[H, W]``).

    A pixel is in the band when a pixel of another label lies within ``width`` px of it in the
    chessboard distance (its ``(2 width + 1)``-square window holds another label), so the band is
    ``width`` px deep on each side of every boundary. Image borders are not boundaries. This is
    the region of the *trimap* evaluation (Kohli et al., IJCV 2009) that DeepLab used to show
    what a CRF gains at object outlines (Chen et al., ICLR 2015).
    """
    labels = _as_tensor(labels, "labels")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int (pixels), got {width!r}")
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


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class InstanceScores:
    """Object-level scores of one image, from :func:`instance_scores`.

    ``tp`` / ``fp`` / ``fn`` and the precision, recall, F1 and F2 built from them are counted at
    ``match_threshold``; ``tp_per_threshold`` and ``score_per_threshold`` (``TP / (TP + FP + FN)``)
    at each of ``thresholds``, and ``dsb_score`` is the mean of the latter (the Kaggle Data
    Science Bowl 2018 metric for one image, which Kaggle called "mean average precision").
    ``matched_iou`` holds the IoU of every pair above 0.5 (the pairs that can match at any
    allowed threshold), largest first.
    A ratio whose denominator is 0 (precision with no predicted object, recall with no true one,
    every score of an image with neither) is NaN.
    """

    n_true: int
    n_pred: int
    match_threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    f2: float
    thresholds: tuple[float, ...]
    tp_per_threshold: tuple[int, ...]
    score_per_threshold: tuple[float, ...]
    dsb_score: float
    matched_iou: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (e.g. for a pandas row)."""
        return asdict(self)


def _label_map(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be an instance label map [H, W], got shape {x.shape}")
    if x.dtype == np.bool_:
        return x.astype(np.int64)  # a binary mask is one object
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer instance labels (0 = background), got dtype "
            f"{x.dtype}; label a probability map first (e.g. "
            "postprocess.split_instances or scipy.ndimage.label)"
        )
    if x.size and x.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0 (0 = background), got {x.min()}")
    return x


def _iou_threshold(t: Any, name: str) -> Fraction:
    """``t`` as an exact fraction of its decimal form (0.7 -> 7/10, not the binary float), so
    that an IoU of exactly 7/10 is not counted as above 0.7."""
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {t!r}")
    if not 0.5 <= float(t) < 1.0:
        raise ValueError(
            f"{name} must be in [0.5, 1), got {t!r}: from IoU > 0.5 on, a predicted "
            "object can match at most one true object; below it a matching would "
            "have to be chosen"
        )
    return Fraction(str(float(t)))


def _ratio_or_nan(num: int, den: int) -> float:
    return num / den if den else float("nan")


def instance_scores(
    pred_labels: Tensor | np.ndarray,
    true_labels: Tensor | np.ndarray,
    thresholds: Any = TGS_THRESHOLDS,
    match_threshold: float = 0.5,
) -> InstanceScores:
    """Match predicted to true objects by IoU and count hits, misses and spurious objects.

    Args:
        pred_labels: predicted instance labels ``[H, W]`` (int; 0 = background, any positive id
            is one object; ids need not be consecutive). A bool mask is one object.
        true_labels: true instance labels ``[H, W]``, the same convention.
        thresholds: IoU thresholds for the per-threshold scores, each in [0.5, 1); by default
            0.50, 0.55, ..., 0.95 (the Data Science Bowl 2018 and TGS thresholds).
        match_threshold: the IoU threshold of ``tp``/``fp``/``fn``, precision, recall, F1, F2.

    A predicted and a true object match when their IoU is **above** the threshold (strictly, as
    Kaggle counts). For a threshold of at least 0.5 a match is unique: two objects that each
    cover more than half of their union with a third would have to overlap each other, which
    disjoint labels cannot. So ``TP`` is the number of pairs above the threshold, ``FP`` the
    unmatched predicted objects and ``FN`` the unmatched true ones. Returns
    :class:`InstanceScores`.
    """
    pred = _label_map(pred_labels, "pred_labels")
    true = _label_map(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_labels and true_labels must have the same shape, got {pred.shape} "
            f"and {true.shape}"
        )
    ts = tuple(thresholds) if not isinstance(thresholds, (int, float)) else (thresholds,)
    if not ts:
        raise ValueError("thresholds must hold at least one IoU threshold")
    exact = [_iou_threshold(t, "thresholds") for t in ts]
    match_at = _iou_threshold(match_threshold, "match_threshold")

    # number objects 1..T and 1..P, background 0, then one joint histogram gives every overlap
    t_ids, p_ids = np.unique(true), np.unique(pred)
    t_ids, p_ids = t_ids[t_ids != 0], p_ids[p_ids != 0]
    n_t, n_p = len(t_ids), len(p_ids)
    ti = np.where(true == 0, 0, np.searchsorted(t_ids, true) + 1).ravel()
    pi = np.where(pred == 0, 0, np.searchsorted(p_ids, pred) + 1).ravel()
    joint = np.bincount(ti * (n_p + 1) + pi, minlength=(n_t + 1) * (n_p + 1))
    joint = joint.reshape(n_t + 1, n_p + 1).astype(np.int64)
    inter = joint[1:, 1:]
    union = joint[1:, :].sum(1)[:, None] + joint[:, 1:].sum(0)[None, :] - inter
    # only pairs above IoU 0.5 can match at any allowed threshold: at most min(T, P) of them
    rows, cols = np.nonzero(2 * inter > union)
    ious = [Fraction(int(inter[r, c]), int(union[r, c])) for r, c in zip(rows, cols)]

    def hits(t: Fraction) -> int:
        return sum(iou > t for iou in ious)

    tp_at = tuple(hits(t) for t in exact)
    per_t = tuple(_ratio_or_nan(tp, n_t + n_p - tp) for tp in tp_at)  # TP + FP + FN
    tp = hits(match_at)
    fp, fn = n_p - tp, n_t - tp
    return InstanceScores(
        n_true=n_t,
        n_pred=n_p,
        match_threshold=float(match_threshold),
        tp=tp,
        fp=fp,
        fn=fn,
        precision=_ratio_or_nan(tp, tp + fp),
        recall=_ratio_or_nan(tp, tp + fn),
        f1=_ratio_or_nan(2 * tp, 2 * tp + fp + fn),
        f2=_ratio_or_nan(5 * tp, 5 * tp + 4 * fn + fp),
        thresholds=tuple(float(t) for t in ts),
        tp_per_threshold=tp_at,
        score_per_threshold=per_t,
        dsb_score=float(np.mean(per_t)),
        matched_iou=tuple(sorted((float(iou) for iou in ious), reverse=True)),
    )
