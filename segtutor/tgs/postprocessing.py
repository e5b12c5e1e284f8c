"""Probabilities to masks: threshold, small components, the empty-image rule, and the search.

The threshold and the minimum component size are chosen on out-of-fold predictions
(:func:`search_postprocess`), never on the images a model trained on; :func:`postprocess` then
applies the chosen values to the test predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from segtutor import checks
from segtutor.metrics import tgs_map
from segtutor.postprocess import remove_small_objects


class ThresholdSearch(NamedTuple):
    """Result of :func:`search_threshold`: the best threshold, its score, and the whole curve."""

    threshold: float
    score: float
    thresholds: list[float]
    scores: list[float]


def default_thresholds() -> list[float]:
    """The grid searched by default: 0.20, 0.25, ..., 0.80 (probabilities)."""
    return [round(0.20 + 0.05 * i, 2) for i in range(13)]


def search_threshold(
    probs: Tensor,
    masks: Tensor,
    thresholds: Sequence[float] | None = None,
    metric: Callable[[Tensor, Tensor], float] | None = None,
    postprocess: Callable[[Tensor], Tensor] | None = None,
) -> ThresholdSearch:
    """Pick the probability threshold that maximises the metric on out-of-fold predictions.

    Args:
        probs: ``[N, H, W]`` predicted salt probabilities in [0, 1] of images the models did
            *not* train on (out-of-fold), so that the choice is not tuned on training data.
        masks: ``[N, H, W]`` true masks in {0, 1}.
        thresholds: candidates; a pixel is salt when ``prob > threshold``. Default
            :func:`default_thresholds`.
        metric: ``metric(pred_masks, true_masks) -> float``, higher is better; default the
            competition's :func:`segtutor.metrics.tgs_map`.
        postprocess: optional ``[N,H,W] bool -> [N,H,W] bool`` applied after thresholding
            (e.g. small-component removal), so the threshold is chosen for the final masks.

    Returns:
        :class:`ThresholdSearch`; ties go to the threshold nearest 0.5 (the unbiased default).
    """
    if metric is None:
        metric = tgs_map
    probs, masks, grid = _search_inputs(probs, masks, thresholds)
    if not grid:
        raise ValueError("thresholds must not be empty")
    truth = masks > 0.5
    scores = []
    for t in grid:
        pred = probs > t
        if postprocess is not None:
            pred = postprocess(pred)
        scores.append(float(metric(pred, truth)))
    best = max(range(len(grid)), key=lambda i: (scores[i], -abs(grid[i] - 0.5)))
    return ThresholdSearch(grid[best], scores[best], grid, scores)


def _search_inputs(
    probs: Tensor, masks: Tensor, thresholds: Sequence[float] | None
) -> tuple[Tensor, Tensor, list[float]]:
    """``probs`` and ``masks`` as tensors ``[N, H, W]`` of one shape, and the threshold grid
    (default :func:`default_thresholds`)."""
    probs, masks = torch.as_tensor(probs), torch.as_tensor(masks)
    if probs.dim() != 3 or probs.shape != masks.shape:
        raise ValueError(
            f"probs and masks must both be [N, H, W] of the same shape, got "
            f"{tuple(probs.shape)} and {tuple(masks.shape)}"
        )
    grid = default_thresholds() if thresholds is None else [float(t) for t in thresholds]
    return probs, masks, grid


def _check_probability(value: Any, name: str) -> None:
    # `prob > nan` is False everywhere: a NaN threshold would silently give empty masks
    checks.probability(name, value)


def suppress_empty(masks: Tensor, salt_prob: Tensor | None, empty_threshold: float = 0.5) -> Tensor:
    """Blank the masks of images that the image-level classifier calls empty.

    Args:
        masks: ``[N, H, W]`` bool predicted masks.
        salt_prob: ``[N]`` probability that each image contains salt (the empty/non-empty
            classification head after a sigmoid); ``None`` leaves the masks unchanged.
        empty_threshold: images with ``salt_prob < empty_threshold`` get an empty mask.

    In this competition an empty image predicted with even one salt pixel scores 0 instead of 1,
    and about 39% of the real training images are empty, so a good image-level decision is worth
    more than any boundary refinement.
    """
    _check_probability(empty_threshold, "empty_threshold")
    if salt_prob is None:
        return masks
    salt_prob = torch.as_tensor(salt_prob, device=masks.device).reshape(-1)
    if salt_prob.numel() != masks.shape[0]:
        raise ValueError(f"salt_prob has {salt_prob.numel()} values for {masks.shape[0]} masks")
    keep = (salt_prob >= empty_threshold).view(-1, 1, 1)
    return masks & keep


def remove_small(masks: Tensor, min_size: int) -> Tensor:
    """Remove predicted connected components smaller than ``min_size`` pixels from each mask.

    ``masks`` is ``[N, H, W]`` bool; delegates to :func:`segtutor.postprocess.remove_small_objects`.
    """
    if checks.non_negative_int("min_size", min_size) == 0:  # pixels
        return masks
    return remove_small_objects(masks.bool(), int(min_size))


def postprocess(
    probs: Tensor,
    threshold: float = 0.5,
    min_size: int = 0,
    salt_prob: Tensor | None = None,
    empty_threshold: float = 0.5,
) -> Tensor:
    """Probabilities ``[N, H, W]`` -> final bool masks ``[N, H, W]``.

    Threshold (``prob > threshold``), drop components under ``min_size`` pixels, then blank
    images the classifier head calls empty (:func:`suppress_empty`).
    """
    _check_probability(threshold, "threshold")
    probs = torch.as_tensor(probs)
    if probs.dim() != 3:
        raise ValueError(f"probs must be [N, H, W], got {tuple(probs.shape)}")
    masks = remove_small(probs > threshold, min_size)
    return suppress_empty(masks, salt_prob, empty_threshold)


def default_min_sizes() -> list[int]:
    """Candidate minimum component sizes (pixels at 101x101) for the out-of-fold search."""
    return [0, 10, 20, 40, 80]


def default_empty_thresholds() -> list[float]:
    """Candidate thresholds of the empty-image rule for the out-of-fold search: 0 turns the rule
    off (no salt probability is below it), 0.5 is the unbiased default."""
    return [0.0, 0.3, 0.5, 0.7]


def search_postprocess(
    probs: Tensor,
    masks: Tensor,
    salt_prob: Tensor | None = None,
    thresholds: Sequence[float] | None = None,
    min_sizes: Sequence[int] | None = None,
    empty_thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Grid search of the threshold, the minimum component size and the empty-image rule on
    out-of-fold predictions ``probs [N, H, W]`` against ``masks [N, H, W]``.

    Every combination is scored after the whole post-processing (:func:`postprocess`). The
    empty-image threshold is searched too (``empty_thresholds``, default
    :func:`default_empty_thresholds`, which includes 0: the rule off), so that an image-level
    head that has not learned cannot blank every mask unless blanking them scores best; without
    ``salt_prob`` there is no rule and ``empty_threshold`` is 0.

    Returns ``{"threshold", "min_size", "empty_threshold", "score", "table", "empty_scores"}``:
    ``table`` maps each min size to its :class:`ThresholdSearch` under the chosen empty
    threshold, ``empty_scores`` each empty threshold to the best score it reaches. Ties go to
    the smaller min size, then to the empty threshold nearest 0.5, then (within a curve) to the
    threshold nearest 0.5.
    """
    probs, masks, grid = _search_inputs(probs, masks, thresholds)
    sizes = default_min_sizes() if min_sizes is None else [int(s) for s in min_sizes]
    if salt_prob is None:
        empties = [0.0]
    else:
        empties = (
            default_empty_thresholds()
            if empty_thresholds is None
            else [float(e) for e in empty_thresholds]
        )
    if not grid or not sizes or not empties:
        raise ValueError("thresholds, min_sizes and empty_thresholds must not be empty")
    for e in empties:
        _check_probability(e, "empty_threshold")
    truth = masks > 0.5
    # scores[e][size][i]: small components are removed once per (threshold, size), the rule
    # applied to that for every empty threshold
    scores = {e: {s: [] for s in sizes} for e in empties}
    for size in sizes:
        for t in grid:
            pred = remove_small(probs > t, size)
            for e in empties:
                scores[e][size].append(float(tgs_map(suppress_empty(pred, salt_prob, e), truth)))

    def curve(e: float, size: int) -> ThresholdSearch:
        values = scores[e][size]
        best = max(range(len(grid)), key=lambda i: (values[i], -abs(grid[i] - 0.5)))
        return ThresholdSearch(grid[best], values[best], grid, values)

    curves = {(e, s): curve(e, s) for e in empties for s in sizes}
    e_best, s_best = max(curves, key=lambda k: (curves[k].score, -k[1], -abs(k[0] - 0.5)))
    chosen = curves[(e_best, s_best)]
    return {
        "threshold": chosen.threshold,
        "min_size": s_best,
        "empty_threshold": e_best,
        "score": chosen.score,
        "table": {s: curves[(e_best, s)] for s in sizes},
        "empty_scores": {e: max(curves[(e, s)].score for s in sizes) for e in empties},
    }
