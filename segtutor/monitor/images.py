"""Prediction images for a logger: input, ground truth and prediction side by side."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Logger

__all__ = ["log_prediction_images", "prediction_grid"]


def prediction_grid(images: Tensor, target: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """For each image: the image, its target and its prediction, as ``[3N, 3, H, W]`` float in
    [0, 1] on the CPU (one row of three per image in a 3-column grid).

    Args:
        images: ``[N, C, H, W]``; the first three channels are shown (one channel as grey),
            each image stretched to [0, 1].
        target, pred: label maps ``[N, H, W]`` (255 = ignore, shown white).
        num_classes: colours of the label maps (2 for a binary task).
    """
    # matplotlib (behind viz) takes a while to import: only when images are logged
    from segtutor import viz

    images = images.detach().float().cpu()
    images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - lo) / (hi - lo).clamp_min(1e-8)

    def colour(labels: Tensor) -> Tensor:
        return torch.from_numpy(viz.colorize(labels, num_classes)).permute(2, 0, 1).float()

    grid = []
    for i in range(images.shape[0]):
        grid += [images[i], colour(target[i].cpu()), colour(pred[i].cpu())]
    return torch.stack(grid)


def log_prediction_images(
    logger: Logger,
    images: Tensor,
    target: Tensor,
    pred: Tensor,
    step: int,
    num_classes: int,
    probs: Tensor | None = None,
    ignore_index: int = 255,
    prefix: str = "val/",
) -> None:
    """Log :func:`prediction_grid` as ``<prefix>image_target_prediction`` and, for a binary
    task, the precision-recall curve of ``probs`` (``[N, H, W]`` salt probabilities) against
    ``target`` over the pixels that are not ``ignore_index``."""
    target = target.long().cpu()
    if target.ndim == 4:
        target = target[:, 0]
    logger.log_images(
        f"{prefix}image_target_prediction", prediction_grid(images, target, pred, num_classes), step
    )
    if probs is not None:
        labels = target.flatten()
        keep = labels != ignore_index
        logger.log_pr_curve(f"{prefix}pr_curve", labels[keep], probs.flatten().cpu()[keep], step)
