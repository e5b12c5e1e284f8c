"""Receptive fields: the analytic recurrence and an empirical measurement from gradients.

For a stack of layers with kernel ``k_l``, stride ``s_l`` and dilation ``a_l``, the receptive
field ``r`` (in input pixels) grows as ``r_l = r_{l-1} + (K_l - 1) * j_{l-1}`` where
``K_l = k_l + (k_l - 1)(a_l - 1)`` is the effective (dilated) kernel size and
``j_l = j_{l-1} * s_l`` the distance in input pixels between neighbouring outputs ("jump"),
``r_0 = j_0 = 1`` (Dumoulin & Visin, 2016; Yu & Koltun, ICLR 2016).

Empirically, the receptive field of an output pixel is the set of input pixels with a non-zero
gradient of that output; its bounding box must match the recurrence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segtutor.checks import pair, positive_int
from segtutor.models.outputs import main_output

__all__ = [
    "effective_kernel_size",
    "input_gradient",
    "receptive_field",
    "receptive_field_growth",
    "receptive_field_of",
]

Layer = tuple[int, int, int]


def effective_kernel_size(k: int, dilation: int = 1) -> int:
    """Span in pixels of a ``k``-tap kernel with dilation ``a``: ``K = k + (k - 1)(a - 1)``."""
    k = positive_int("k", k)
    dilation = positive_int("dilation", dilation)
    return k + (k - 1) * (dilation - 1)


def _check_layers(layers: Sequence[Sequence[int]]) -> list[Layer]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError("layers must be a sequence of (kernel, stride, dilation) tuples")
    checked = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, Sequence) or len(layer) != 3:
            raise ValueError(
                f"layers[{i}] must be a (kernel, stride, dilation) tuple, got {layer!r}"
            )
        k, s, a = layer
        checked.append(
            (
                positive_int(f"layers[{i}] kernel", k),
                positive_int(f"layers[{i}] stride", s),
                positive_int(f"layers[{i}] dilation", a),
            )
        )
    return checked


def receptive_field_growth(layers: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``(receptive_field, jump)`` after each layer, in input pixels; one row per layer."""
    rf, jump = 1, 1
    rows = []
    for k, s, a in _check_layers(layers):
        rf += (effective_kernel_size(k, a) - 1) * jump
        jump *= s
        rows.append((rf, jump))
    return rows


def receptive_field(layers: Sequence[Sequence[int]]) -> int:
    """Receptive field (input pixels, one side) of a stack of ``(kernel, stride, dilation)`` layers.

    >>> receptive_field([(3, 1, 1)] * 3)
    7
    >>> receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)])
    15
    """
    rows = receptive_field_growth(layers)
    return rows[-1][0] if rows else 1


def _first_conv_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    raise ValueError("model has no convolution; pass in_channels explicitly")


def input_gradient(
    model: nn.Module,
    input_size: int | Sequence[int],
    in_channels: int | None = None,
    trials: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``|d out[centre] / d input|`` ``[H, W]``, summed over channels and ``trials`` random inputs.

    The output is the model's response at the centre pixel of its output map (summed over output
    channels). Several random inputs make it unlikely that a ReLU switched off at one input hides
    part of the field. The model is put in eval mode and restored afterwards; its weights are not
    changed. Luo et al. (NIPS 2016) call this map the *effective* receptive field.
    """
    H, W = pair("input_size", input_size)
    trials = positive_int("trials", trials)
    if in_channels is None:
        in_channels = _first_conv_channels(model)
    if device is None:
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
    noise = torch.randn(trials, in_channels, H, W, generator=generator)
    x = noise.to(device).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        out = main_output(model(x))
        if out.dim() != 4:
            raise ValueError(f"model must return [N, C, h, w], got {tuple(out.shape)}")
        h, w = out.shape[-2:]
        out[:, :, h // 2, w // 2].sum().backward()
    finally:
        model.train(was_training)
    return x.grad.detach().abs().sum(dim=(0, 1)).cpu()


def receptive_field_of(
    model: nn.Module,
    input_size: int | Sequence[int],
    in_channels: int | None = None,
    trials: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """Measured receptive field ``(height, width)`` in input pixels of the centre output pixel.

    The bounding box of the non-zero entries of :func:`input_gradient`. ``input_size`` must be
    large enough that the field does not reach the border, otherwise a ValueError says so
    (a clipped field would be underestimated).
    """
    grad = input_gradient(model, input_size, in_channels, trials, generator)
    rows = torch.nonzero(grad.sum(dim=1) > 0).flatten()
    cols = torch.nonzero(grad.sum(dim=0) > 0).flatten()
    if len(rows) == 0:
        raise ValueError(
            "the centre output has zero gradient for every trial input (a ReLU at "
            "the output switched off?); use more trials or measure before that ReLU"
        )
    H, W = grad.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == H - 1 or cols[-1] == W - 1:
        raise ValueError(
            f"input_size {(H, W)} is too small: the receptive field reaches the "
            "border; use a larger input"
        )
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
