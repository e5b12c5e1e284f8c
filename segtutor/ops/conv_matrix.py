"""Convolution as a matrix, and the output-size arithmetic of convolution and its transpose.

A 2-D convolution of an ``H x W`` image with a fixed kernel is a linear map, so it is a matrix
``C`` of shape ``[out_h * out_w, H * W]`` acting on the flattened image. Its transpose ``C.T`` maps
an output-sized image back to the input size: that is exactly what ``F.conv_transpose2d`` computes
with the same kernel, stride, padding and dilation (Dumoulin & Visin, 2016). The matrix is
built densely, which is fine for the small sizes used to *look* at it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segtutor.checks import pair, positive_int

__all__ = [
    "conv2d_matrix",
    "conv_output_size",
    "conv_transpose_output_size",
    "output_padding_for",
]


def conv_output_size(
    n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis (pixels).

    ``floor((n + 2 p - d (k - 1) - 1) / s) + 1``, the formula of the ``nn.Conv2d`` docs.
    Raises ValueError when the (dilated) kernel does not fit in the padded input.
    """
    n = positive_int("n", n)
    kernel = positive_int("kernel", kernel)
    stride = positive_int("stride", stride)
    padding = positive_int("padding", padding, minimum=0)
    dilation = positive_int("dilation", dilation)
    span = dilation * (kernel - 1) + 1
    if span > n + 2 * padding:
        raise ValueError(
            f"kernel of size {kernel} with dilation {dilation} spans {span} pixels, "
            f"more than the padded input ({n} + 2*{padding} = {n + 2 * padding})"
        )
    return (n + 2 * padding - span) // stride + 1


def conv_transpose_output_size(
    n: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one axis (pixels).

    ``(n - 1) s - 2 p + d (k - 1) + output_padding + 1``, the formula of the
    ``nn.ConvTranspose2d`` docs. ``output_padding`` must be smaller than ``stride`` or
    ``dilation`` (PyTorch's rule): it only picks one of the input sizes that a strided
    convolution maps to the same ``n``.
    """
    n = positive_int("n", n)
    kernel = positive_int("kernel", kernel)
    stride = positive_int("stride", stride)
    padding = positive_int("padding", padding, minimum=0)
    output_padding = positive_int("output_padding", output_padding, minimum=0)
    dilation = positive_int("dilation", dilation)
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"output_padding must be smaller than stride or dilation, got "
            f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
        )
    size = (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if size < 1:
        raise ValueError(f"these settings give a transposed-convolution output of size {size}")
    return size


def output_padding_for(
    n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """The ``output_padding`` that makes a transposed convolution give back length ``n``.

    A stride-``s`` convolution maps up to ``s`` different input lengths to the same output length,
    so the transpose needs to be told which one to produce:
    ``n - ((out - 1) s - 2 p + d (k - 1) + 1)`` with ``out`` = :func:`conv_output_size`. That is
    the remainder ``(n + 2 p - d (k - 1) - 1) mod s``, the input pixels the strided convolution
    left unread, so it is always below ``stride`` as PyTorch requires. Raises ValueError where
    ``F.conv2d`` rejects the settings (the dilated kernel larger than the padded input).
    """
    out = conv_output_size(n, kernel, stride, padding, dilation)
    # directly, not as n - conv_transpose_output_size(out, ..., output_padding=0): that size can
    # be 0 before the padding is added (1x1 input, kernel 2, stride 2, padding 1: 0 + 1 = 1)
    return n - ((out - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1)


def conv2d_matrix(
    kernel: torch.Tensor,
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """The matrix ``C`` ``[out_h * out_w, H * W]`` of a single-channel 2-D convolution.

    ``kernel``: ``[kh, kw]`` (or ``[1, 1, kh, kw]``, a conv weight); ``input_size``: ``H`` or
    ``(H, W)`` in pixels. Zero padding, cross-correlation like ``F.conv2d``. Then for an image
    ``x`` ``[H, W]``::

        (C @ x.flatten()).view(out_h, out_w)  == F.conv2d(x[None, None], kernel[None, None], ...)
        (C.T @ y.flatten()).view(H, W)        == F.conv_transpose2d(
                                                   y[None, None], kernel[None, None], ...,
                                                   output_padding=output_padding_for(...))

    Row ``o`` of ``C`` holds the kernel weights at the input pixels that output pixel ``o`` sees.
    Raises ValueError when the dilated kernel is larger than the padded input.
    """
    if not isinstance(kernel, torch.Tensor) or not kernel.is_floating_point():
        raise TypeError("kernel must be a floating-point tensor [kh, kw]")
    if kernel.dim() == 4 and kernel.shape[:2] == (1, 1):
        kernel = kernel[0, 0]
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise ValueError(f"kernel must be [kh, kw] or [1, 1, kh, kw], got {tuple(kernel.shape)}")
    H, W = pair("input_size", input_size)
    sh, sw = pair("stride", stride)
    ph, pw = pair("padding", padding, minimum=0)
    dh, dw = pair("dilation", dilation)
    kh, kw = kernel.shape
    out_h = conv_output_size(H, kh, sh, ph, dh)
    out_w = conv_output_size(W, kw, sw, pw, dw)

    dev = kernel.device
    oy = torch.arange(out_h, device=dev).view(-1, 1, 1, 1)
    ox = torch.arange(out_w, device=dev).view(1, -1, 1, 1)
    ky = torch.arange(kh, device=dev).view(1, 1, -1, 1)
    kx = torch.arange(kw, device=dev).view(1, 1, 1, -1)
    # input pixel touched by tap (ky, kx) of output pixel (oy, ox); outside = zero padding
    iy = oy * sh - ph + ky * dh
    ix = ox * sw - pw + kx * dw
    iy, ix = torch.broadcast_tensors(iy, ix)
    rows = (oy * out_w + ox).expand_as(iy)
    inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    weights = kernel.view(1, 1, kh, kw).expand_as(iy)
    C = torch.zeros(out_h * out_w, H * W, dtype=kernel.dtype, device=dev)
    # accumulate: with dilation 1 and no stride two taps never hit the same pixel, but be safe
    C.index_put_((rows[inside], (iy * W + ix)[inside]), weights[inside], accumulate=True)
    return C
