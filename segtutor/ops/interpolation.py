"""Linear and bilinear interpolation written from the textbook formula.

Bilinear interpolation is linear interpolation done twice: first along x (the width), then along
y (the height). With the four neighbours ``Q11 = f(x1, y1)``, ``Q21 = f(x2, y1)``,
``Q12 = f(x1, y2)``, ``Q22 = f(x2, y2)`` and fractional offsets ``tx = x - x1``, ``ty = y - y1``::

    R1 = (1 - tx) * Q11 + tx * Q21          # along x, on row y1
    R2 = (1 - tx) * Q12 + tx * Q22          # along x, on row y2
    P  = (1 - ty) * R1  + ty * R2           # along y

The only subtle part is *where* an output pixel samples the input, i.e. :func:`source_coordinates`,
which is what ``align_corners`` changes. With the same coordinates as PyTorch, the result equals
``F.interpolate(x, size, mode="bilinear", align_corners=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segtutor.checks import pair, positive_int

__all__ = ["bilinear_interpolate", "linear_interpolate_1d", "source_coordinates"]


def source_coordinates(
    in_size: int, out_size: int, align_corners: bool = False, clamp: bool = True
) -> torch.Tensor:
    """Input coordinate (in pixels, float64 ``[out_size]``) sampled by each output pixel.

    ``align_corners=True``: the centres of the first and last pixels of input and output coincide,
    ``src = dst * (in - 1) / (out - 1)``. ``align_corners=False``: pixels are unit squares and the
    *edges* of the two grids coincide, ``src = (dst + 0.5) * in / out - 0.5``; PyTorch clamps the
    negative values this gives near the left edge to 0 (``clamp=True``; ``clamp=False`` keeps the
    raw geometry, for pictures).
    """
    in_size = positive_int("in_size", in_size)
    out_size = positive_int("out_size", out_size)
    dst = torch.arange(out_size, dtype=torch.float64)
    if align_corners:
        if out_size == 1:
            return torch.zeros(1, dtype=torch.float64)
        return dst * ((in_size - 1) / (out_size - 1))
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    return src.clamp(min=0.0) if clamp else src


def linear_interpolate_1d(
    x: torch.Tensor, size: int, align_corners: bool = False, dim: int = -1
) -> torch.Tensor:
    """Resample ``x`` along one dimension to ``size`` samples by linear interpolation.

    ``x``: any floating tensor, e.g. ``[L]`` or ``[N, C, H, W]``; ``dim`` is the axis resampled.
    Each output sample mixes its two neighbours ``x[i0]`` and ``x[i0 + 1]`` with weights
    ``1 - t`` and ``t``, ``t`` the fractional part of its source coordinate. Returns a tensor of
    the same shape except ``size`` along ``dim``; equal to ``F.interpolate(mode="linear")``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else "")
        )
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    size = positive_int("size", size)
    dim = dim % x.dim()
    length = x.shape[dim]
    if length == 0:
        raise ValueError(f"x has no samples along dim {dim}")
    src = source_coordinates(length, size, align_corners).to(x.device)
    i0 = src.floor().long().clamp(max=length - 1)
    i1 = (i0 + 1).clamp(max=length - 1)
    t = (src - i0).to(x.dtype)  # fractional offset in [0, 1)
    shape = [1] * x.dim()
    shape[dim] = size
    t = t.view(shape)
    return (1 - t) * x.index_select(dim, i0) + t * x.index_select(dim, i1)


def bilinear_interpolate(
    x: torch.Tensor, size: int | Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Resize ``x`` ``[N, C, H, W]`` to ``size`` ``(h, w)`` (or ``h = w = size``) bilinearly.

    Two linear passes, first along x (width) then along y (height): the separable form of the
    four-neighbour formula. Equals ``F.interpolate(x, size, mode="bilinear",
    align_corners=align_corners)`` (no antialiasing, as PyTorch's default).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a [N, C, H, W] tensor, got {shape}")
    out_h, out_w = pair("size", size)
    along_x = linear_interpolate_1d(x, out_w, align_corners, dim=3)  # rows: R1, R2
    return linear_interpolate_1d(along_x, out_h, align_corners, dim=2)  # columns: P
