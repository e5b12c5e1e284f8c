"""Criteria over a model's whole output: the main logits plus the auxiliary heads.

The models return ``{"out": logits, "aux": ...}`` in training mode (see
:mod:`segtutor.models.outputs`). The criteria here take that output as it is, the way
torchvision's segmentation reference weights ``losses["out"] + 0.5 * losses["aux"]`` inside its
criterion, so a training loop passes the model output to the criterion unchanged. A criterion
that reads a model output says which parts in ``handled_outputs``; the Trainer wraps a plain
``loss(logits, target)`` in :class:`WithAuxiliary`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from segtutor import checks
from segtutor.models.outputs import aux_outputs, main_output

Loss = Callable[[Tensor, Tensor], Tensor]
Output = Tensor | Sequence[Tensor] | Mapping[str, Any]


def match_target(logits: Tensor, target: Tensor) -> Tensor:
    """Binary logits ``[B, 1, H, W]`` beside a mask ``[B, H, W]`` -> ``[B, H, W]``, so that a
    loss asking for equal shapes (``torch.nn.BCEWithLogitsLoss``) takes them; anything else
    (multi-class logits ``[B, C, H, W]``, equal shapes) comes back unchanged."""
    if logits.ndim == target.ndim + 1 and logits.shape[1] == 1:
        return logits[:, 0]
    return logits


def _check_loss(loss: Any, name: str) -> None:
    if not callable(loss):
        raise TypeError(
            f"{name} must be a loss callable loss(logits, target), got {type(loss).__name__}"
        )


class WithAuxiliary(nn.Module):
    """``loss(out, target) + aux_weight * sum_i aux_loss(aux_i, target)`` on a model output.

    The criterion of models with auxiliary heads: PSPNet's and DeepLab's head on ``layer3``
    (weight 0.4 in the PSPNet paper), the deep-supervision heads of U-Net++ and the ResNet34
    U-Net. Every auxiliary output is at the input size (the models upsample them), so each gets
    the same target. A plain tensor output (eval mode) gives ``loss(out, target)`` alone.

    Args:
        loss: ``loss(logits, target) -> scalar`` (binary logits ``[B, 1, H, W]`` are matched to
            masks ``[B, H, W]`` first, see :func:`match_target`).
        aux_weight: the weight of each auxiliary term.
        aux_loss: the loss of the auxiliary outputs (default ``loss``).
    """

    handled_outputs: tuple[str, ...] = ("out", "aux")

    def __init__(self, loss: Loss, aux_weight: float = 0.4, aux_loss: Loss | None = None) -> None:
        super().__init__()
        _check_loss(loss, "loss")
        if aux_loss is not None:
            _check_loss(aux_loss, "aux_loss")
        self.loss, self.aux_weight = loss, checks.number("aux_weight", aux_weight, minimum=0.0)
        self.aux_loss = loss if aux_loss is None else aux_loss

    def forward(self, output: Tensor | Mapping[str, Any], target: Tensor) -> Tensor:
        out = main_output(output)
        total = self.loss(match_target(out, target), target)
        for aux in aux_outputs(output):
            total = total + self.aux_weight * self.aux_loss(match_target(aux, target), target)
        return total

    def extra_repr(self) -> str:
        return f"aux_weight={self.aux_weight}"


def output_criterion(
    criterion: Loss, aux_weight: float | None = None, aux_loss: Loss | None = None
) -> Callable[[Any, Tensor], Tensor]:
    """A criterion over whole model outputs: ``criterion`` itself when it reads them (it lists
    ``handled_outputs``), else the plain loss wrapped in :class:`WithAuxiliary` (``aux_weight``
    default 0.4). ``aux_weight``/``aux_loss`` given with a criterion that reads the outputs
    itself raise ValueError: that criterion holds its own weights."""
    if hasattr(criterion, "handled_outputs"):
        if aux_weight is not None or aux_loss is not None:
            raise ValueError(
                "aux_weight and aux_criterion wrap a plain loss(logits, masks); the criterion "
                f"{type(criterion).__name__} reads the model output itself (handled_outputs="
                f"{tuple(criterion.handled_outputs)}): give it its own weights instead"
            )
        return criterion
    return WithAuxiliary(criterion, 0.4 if aux_weight is None else aux_weight, aux_loss)


class DeepSupervisionLoss(nn.Module):
    """Weighted average of ``base`` over a main output and auxiliary outputs at any resolution.

    ``outputs`` may be a tensor (just the main output), a list/tuple ``[main, aux1, ...]`` or a
    dict ``{"out": main, "aux": aux or [aux1, ...]}`` (the train-mode output of the models).
    The target ``[B, H, W]`` (or ``[B, 1, H, W]``) is resized to each output's spatial size with
    nearest-neighbour sampling, so labels (and the ignore value) are never blended. The result is
    ``sum_i w_i L_i / sum_i w_i``.
    """

    handled_outputs: tuple[str, ...] = ("out", "aux")

    def __init__(self, base: nn.Module | Loss, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        _check_loss(base, "base")
        self.base = base
        if weights is not None:
            weights = [float(w) for w in weights]
            if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        self.weights = weights

    @staticmethod
    def _flatten(outputs: Output) -> list[Tensor]:
        if isinstance(outputs, (list, tuple)) and all(isinstance(o, Tensor) for o in outputs):
            return list(outputs)
        if isinstance(outputs, (Tensor, Mapping)):
            return [main_output(outputs), *aux_outputs(outputs)]
        raise TypeError(
            "outputs must be a tensor, a list of tensors or a dict with 'out'/'aux', "
            f"got {type(outputs).__name__}"
        )

    @staticmethod
    def resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
        """Nearest-neighbour resize of a label map ``[B, H, W]`` or ``[B, 1, H, W]`` to ``size``."""
        if tuple(target.shape[-2:]) == tuple(size):
            return target
        if target.numel() == 0:  # no labels to sample, and interpolate rejects a size of 0
            return target.new_empty((*target.shape[:-2], *size))
        squeeze = target.ndim == 3
        t = target[:, None] if squeeze else target
        # float64 holds every label exactly; nearest sampling copies values, never blends them
        resized = F.interpolate(t.double(), size=size, mode="nearest-exact").to(target.dtype)
        return resized[:, 0] if squeeze else resized

    def forward(self, outputs: Output, target: Tensor) -> Tensor:
        outs = self._flatten(outputs)
        weights = self.weights or [1.0] * len(outs)
        if len(weights) != len(outs):
            raise ValueError(f"got {len(outs)} outputs but {len(weights)} weights")
        total = 0.0
        for w, o in zip(weights, outs):
            t = self.resize_target(target, o.shape[-2:])
            total = total + w * self.base(match_target(o, t), t)
        return total / sum(weights)
