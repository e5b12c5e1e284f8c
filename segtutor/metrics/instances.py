"""Object-level scores: instance matching by IoU, as in the 2018 Data Science Bowl."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from torch import Tensor

from segtutor import checks
from segtutor.metrics._common import check_same_shape
from segtutor.metrics.binary import TGS_THRESHOLDS


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
    t = checks.number(name, t)
    if not 0.5 <= t < 1.0:
        raise ValueError(
            f"{name} must be in [0.5, 1), got {t!r}: from IoU > 0.5 on, a predicted "
            "object can match at most one true object; below it a matching would "
            "have to be chosen"
        )
    return Fraction(str(t))


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
    check_same_shape(pred.shape, true.shape, "pred_labels and true_labels")
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
