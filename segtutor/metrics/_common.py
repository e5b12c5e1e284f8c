"""Input handling shared by the metric modules: tensors from arrays, label dtypes, shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


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


def check_same_shape(
    pred_shape: tuple, target_shape: tuple, names: str = "pred and target"
) -> None:
    """ValueError naming both arguments when two inputs that pair up element-wise differ."""
    if tuple(pred_shape) != tuple(target_shape):
        raise ValueError(
            f"{names} must have the same shape, got {tuple(pred_shape)} and {tuple(target_shape)}"
        )
