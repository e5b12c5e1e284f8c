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

from segtutor.metrics.binary import (
    TGS_THRESHOLDS,
    binary_iou,
    empty_prediction_map,
    tgs_map,
    tgs_scores,
)
from segtutor.metrics.boundary import boundary_band, trimap_iou, trimap_target
from segtutor.metrics.confusion import (
    ConfusionMatrix,
    confusion_matrix,
    constant_prediction_scores,
    dice_coefficient,
    dice_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_iou,
    mean_pixel_accuracy,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    summary_scores,
)
from segtutor.metrics.instances import InstanceScores, instance_scores

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
    "summary_scores",
    "tgs_map",
    "tgs_scores",
    "trimap_iou",
    "trimap_target",
]
