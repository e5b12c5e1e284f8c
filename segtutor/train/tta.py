"""Test-time augmentation (TTA) with exact inverse transforms.

The idea: show the network the same image several times under transforms ``T`` it should not
care about (a horizontal flip for seismic sections: salt on the left looks like salt on the
right), map each prediction back with the inverse transform ``T^-1`` so that every pixel of every
prediction refers to the same pixel of the original image, and average.

Only transforms whose inverse is *exact* on the pixel grid are offered here (flips and their
compositions): a flip is its own inverse, so ``T^-1(f(T(x)))`` lines up pixel for pixel with
``f(x)``. A model that is flip-equivariant (``f(flip(x)) == flip(f(x))``) therefore gets back
exactly its plain output, which is what the tests check.

Outputs may be a tensor or a dict of tensors (models with an empty-image classification head
return e.g. ``{"out": [N,1,H,W], "cls": [N,1]}``): spatial outputs (3-D or 4-D) are flipped back,
image-level outputs (fewer dims) are invariant to the flip and are averaged as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

Output = Tensor | Mapping[str, Tensor]

#: Names of the transforms :func:`tta_predict` understands, each a tuple of dims to flip.
#: Dims count from the end of an ``[N, C, H, W]`` tensor: -1 is width, -2 is height.
TRANSFORMS: dict[str, tuple[int, ...]] = {
    "identity": (),
    "hflip": (-1,),
    "vflip": (-2,),
    "hvflip": (-2, -1),
}


def _check_transforms(transforms: Sequence[str]) -> list[tuple[int, ...]]:
    if isinstance(transforms, str) or not isinstance(transforms, Sequence) or not transforms:
        raise TypeError(
            f"transforms must be a non-empty sequence of names from {sorted(TRANSFORMS)}, "
            f"got {transforms!r}"
        )
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(
            f"transforms: unknown name(s) {unknown}; expected names from {sorted(TRANSFORMS)}"
        )
    return [TRANSFORMS[t] for t in transforms]


def _flip(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return torch.flip(x, dims) if dims else x


def _invert(y: Output, dims: tuple[int, ...]) -> Output:
    """Undo a flip on every spatial ([N,H,W] or [N,K,H,W]) output; leave [N,K] ones alone."""
    if isinstance(y, Tensor):
        return _flip(y, dims) if y.dim() >= 3 else y
    if isinstance(y, Mapping):
        return {k: _invert(v, dims) for k, v in y.items()}
    raise TypeError(
        f"the model returned {type(y).__name__}; expected a Tensor or a dict of Tensors"
    )


def _accumulate(total: Output | None, y: Output) -> Output:
    if total is None:
        return y.clone() if isinstance(y, Tensor) else {k: v.clone() for k, v in y.items()}
    if isinstance(total, Tensor):
        return total.add_(y)
    for k in total:
        total[k].add_(y[k])
    return total


def _scale(total: Output, factor: float) -> Output:
    if isinstance(total, Tensor):
        return total.mul_(factor)
    return {k: v.mul_(factor) for k, v in total.items()}


@torch.no_grad()
def tta_predict(
    model: Callable[[Tensor], Output],
    images: Tensor,
    transforms: Sequence[str] = ("identity", "hflip"),
    activation: Callable[[Tensor], Tensor] | None = torch.sigmoid,
) -> Output:
    """Average a model's predictions over flipped copies of ``images``, each flipped back.

    Args:
        model: a callable (usually an ``nn.Module`` in eval mode) mapping ``[N, C, H, W]`` images
            to logits ``[N, K, H, W]``, or to a dict of such tensors and image-level ``[N, K]``
            ones.
        images: ``[N, C, H, W]`` float tensor.
        transforms: names from :data:`TRANSFORMS`; the default is the horizontal-flip TTA of the
            TGS case study (the plain image and its mirror).
        activation: applied to every output *before* averaging (``torch.sigmoid`` averages
            probabilities, the usual choice); ``None`` averages the raw logits.

    Returns:
        The averaged output, same structure and shapes as ``model(images)``.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [N, C, H, W] tensor, got {shape}")
    flips = _check_transforms(transforms)
    total: Output | None = None
    for dims in flips:
        y = model(_flip(images, dims))
        if activation is not None:
            y = activation(y) if isinstance(y, Tensor) else {k: activation(v) for k, v in y.items()}
        total = _accumulate(total, _invert(y, dims))
    return _scale(total, 1.0 / len(flips))


def hflip_tta(
    model: Callable[[Tensor], Output],
    images: Tensor,
    activation: Callable[[Tensor], Tensor] | None = torch.sigmoid,
) -> Output:
    """Horizontal-flip TTA: mean of ``f(x)`` and ``flip(f(flip(x)))``; see :func:`tta_predict`.

    ``images`` is ``[N, C, H, W]``; the result has the shape of ``model(images)``.
    """
    return tta_predict(model, images, ("identity", "hflip"), activation=activation)
