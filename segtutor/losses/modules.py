"""The combined losses (BCE + Dice, CE + Dice) and the ``nn.Module`` form of every loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._inputs import _check_reduction, _check_tensor
from .lovasz import _activation, lovasz_hinge, lovasz_softmax, symmetric_lovasz_hinge
from .overlap import dice_loss, jaccard_loss, tversky_loss
from .pixel import bce_loss, cross_entropy_loss, focal_loss, ohem_loss


def bce_dice_loss(
    logits: Tensor,
    target: Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    pos_weight: float | Tensor | None = None,
    smooth: float = 1.0,
    ignore_index: int | None = 255,
) -> Tensor:
    """``bce_weight * BCE + dice_weight * Dice`` on binary logits."""
    return bce_weight * bce_loss(
        logits, target, pos_weight, ignore_index
    ) + dice_weight * dice_loss(logits, target, smooth, ignore_index=ignore_index)


def ce_dice_loss(
    logits: Tensor,
    target: Tensor,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    weight: Tensor | Sequence[float] | None = None,
    smooth: float = 1.0,
    ignore_index: int | None = 255,
) -> Tensor:
    """``ce_weight * CE + dice_weight * Dice`` on multi-class logits ``[B, C, H, W]``."""
    return ce_weight * cross_entropy_loss(
        logits, target, weight, ignore_index
    ) + dice_weight * dice_loss(logits, target, smooth, ignore_index=ignore_index)


# --------------------------------------------------------------------------- nn.Module forms


class _FunctionalLoss(nn.Module):
    """A module that calls ``fn(logits, target, **options)``; the options are fixed at init."""

    fn: Callable[..., Tensor]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        for key, value in options.items():
            if isinstance(value, Tensor):  # class weights follow .to(device)
                self.register_buffer(f"_opt_{key}", value)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        options = {k: getattr(self, f"_opt_{k}", v) for k, v in self.options.items()}
        return type(self).fn(logits, target, **options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class BCEWithLogitsLoss(_FunctionalLoss):
    """Module form of :func:`bce_loss` (logits in)."""

    fn = staticmethod(bce_loss)

    def __init__(
        self,
        pos_weight: float | Tensor | None = None,
        ignore_index: int | None = 255,
        reduction: str = "mean",
    ) -> None:
        _check_reduction(reduction)
        super().__init__(pos_weight=pos_weight, ignore_index=ignore_index, reduction=reduction)


class CrossEntropyLoss(_FunctionalLoss):
    """Module form of :func:`cross_entropy_loss` (finite when every pixel is ignored)."""

    fn = staticmethod(cross_entropy_loss)

    def __init__(
        self,
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = 255,
        reduction: str = "mean",
    ) -> None:
        _check_reduction(reduction)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction)


class FocalLoss(_FunctionalLoss):
    """Module form of :func:`focal_loss`."""

    fn = staticmethod(focal_loss)

    def __init__(
        self,
        alpha: float | Tensor | Sequence[float] | None = None,
        gamma: float = 2.0,
        ignore_index: int | None = 255,
        reduction: str = "mean",
    ) -> None:
        _check_reduction(reduction)
        if alpha is not None and not isinstance(alpha, (int, float)):
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
        super().__init__(alpha=alpha, gamma=gamma, ignore_index=ignore_index, reduction=reduction)


class OHEMLoss(_FunctionalLoss):
    """Module form of :func:`ohem_loss`."""

    fn = staticmethod(ohem_loss)

    def __init__(
        self,
        keep: float = 0.25,
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = 255,
    ) -> None:
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(keep=keep, weight=weight, ignore_index=ignore_index)


class DiceLoss(_FunctionalLoss):
    """Module form of :func:`dice_loss`."""

    fn = staticmethod(dice_loss)

    def __init__(
        self,
        smooth: float = 1.0,
        squared: bool = False,
        per_image: bool = False,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__(
            smooth=smooth, squared=squared, per_image=per_image, ignore_index=ignore_index
        )


class JaccardLoss(_FunctionalLoss):
    """Module form of :func:`jaccard_loss`."""

    fn = staticmethod(jaccard_loss)

    def __init__(
        self, smooth: float = 1.0, per_image: bool = False, ignore_index: int | None = 255
    ) -> None:
        super().__init__(smooth=smooth, per_image=per_image, ignore_index=ignore_index)


class TverskyLoss(_FunctionalLoss):
    """Module form of :func:`tversky_loss`."""

    fn = staticmethod(tversky_loss)

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1.0,
        per_image: bool = False,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__(
            alpha=alpha, beta=beta, smooth=smooth, per_image=per_image, ignore_index=ignore_index
        )


def _lovasz_hinge_any(logits: Tensor, labels: Tensor, symmetric: bool, **options: Any) -> Tensor:
    fn = symmetric_lovasz_hinge if symmetric else lovasz_hinge
    return fn(logits, labels, **options)


class LovaszHingeLoss(_FunctionalLoss):
    """Module form of :func:`lovasz_hinge` (``symmetric=True``: :func:`symmetric_lovasz_hinge`)."""

    fn = staticmethod(_lovasz_hinge_any)

    def __init__(
        self,
        per_image: bool = True,
        ignore_index: int | None = None,
        activation: str = "relu",
        symmetric: bool = False,
    ) -> None:
        _activation(activation)
        super().__init__(
            symmetric=symmetric, per_image=per_image, ignore=ignore_index, activation=activation
        )


def _lovasz_softmax_logits(logits: Tensor, labels: Tensor, **options: Any) -> Tensor:
    _check_tensor(logits, "logits")
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, C, H, W] with C >= 2, got {tuple(logits.shape)}")
    return lovasz_softmax(logits.softmax(1), labels, **options)


class LovaszSoftmaxLoss(_FunctionalLoss):
    """Lovász-softmax on **logits** ``[B, C, H, W]``: softmax, then :func:`lovasz_softmax`."""

    fn = staticmethod(_lovasz_softmax_logits)

    def __init__(
        self,
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__(classes=classes, per_image=per_image, ignore=ignore_index)


class BCEDiceLoss(_FunctionalLoss):
    """Module form of :func:`bce_dice_loss`."""

    fn = staticmethod(bce_dice_loss)

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        pos_weight: float | Tensor | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__(
            bce_weight=bce_weight,
            dice_weight=dice_weight,
            pos_weight=pos_weight,
            smooth=smooth,
            ignore_index=ignore_index,
        )


class CEDiceLoss(_FunctionalLoss):
    """Module form of :func:`ce_dice_loss`."""

    fn = staticmethod(ce_dice_loss)

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        weight: Tensor | Sequence[float] | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = 255,
    ) -> None:
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(
            ce_weight=ce_weight,
            dice_weight=dice_weight,
            weight=weight,
            smooth=smooth,
            ignore_index=ignore_index,
        )
