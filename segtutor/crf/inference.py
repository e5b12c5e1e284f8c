"""Mean-field inference of the dense CRF: input checks, the two kernels of an image, the
iterations, and the public :func:`dense_crf` and :func:`pairwise_messages`."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from segtutor import checks
from segtutor.crf.kernels import _ExactKernel, _Kernel
from segtutor.crf.lattice import _LatticeKernel

Method = Literal["auto", "exact", "fast"]

AUTO_EXACT_MAX_PIXELS = 64 * 64
"""``method="auto"`` uses the exact sum up to this many pixels and the fast filters above it."""

# ----------------------------------------------------------------------------------------------
# inputs


def _image_tensor(image, height: int, width: int, device: torch.device, dtype) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image must be uint8 RGB [H, W, 3], got dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"image must be uint8 RGB [H, W, 3], got dtype {image.dtype}")
    else:
        raise TypeError(
            f"image must be a uint8 numpy array or tensor [H, W, 3], got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape [H, W, 3] (RGB), got {tuple(image.shape)}")
    if tuple(image.shape[:2]) != (height, width):
        raise ValueError(
            f"image is {tuple(image.shape[:2])} pixels but probs is {(height, width)}: "
            "image [H, W, 3] and probs [C, H, W] must have the same H and W"
        )
    return image.to(device=device, dtype=dtype)


def _check_params(
    iterations: int,
    method: str,
    sxy_gaussian: float,
    compat_gaussian: float,
    sxy_bilateral: float,
    srgb: float,
    compat_bilateral: float,
) -> None:
    """The dense CRF's parameters, shared by :func:`dense_crf`, :func:`pairwise_messages` and
    :class:`~segtutor.crf.DenseCRF`: bandwidths > 0, kernel weights >= 0 (0 drops a kernel)."""
    checks.non_negative_int("iterations", iterations)
    checks.one_of("method", method, ("auto", "exact", "fast"))
    for name, value in (("sxy_gaussian", sxy_gaussian), ("sxy_bilateral", sxy_bilateral)):
        checks.positive_float(name, value)
    checks.positive_float("srgb", srgb)
    checks.number("compat_gaussian", compat_gaussian, minimum=0.0)
    checks.number("compat_bilateral", compat_bilateral, minimum=0.0)


def _resolve_method(method: str, pixels: int) -> str:
    if method == "auto":
        return "exact" if pixels <= AUTO_EXACT_MAX_PIXELS else "fast"
    return method


def _kernels(
    rgb: torch.Tensor,
    sxy_gaussian: float,
    compat_gaussian: float,
    sxy_bilateral: float,
    srgb: float,
    compat_bilateral: float,
    method: str,
) -> list[_Kernel]:
    """Message operators of the two kernels of one image ``rgb`` [H, W, 3] (float), each with its
    weight folded in; a kernel of weight 0 is left out."""
    height, width = rgb.shape[:2]
    dev, dt = rgb.device, rgb.dtype
    ys, xs = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt),
        torch.arange(width, device=dev, dtype=dt),
        indexing="ij",
    )
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # [N, 2], pixels
    colour = rgb.reshape(-1, 3)
    make = _ExactKernel if method == "exact" else _LatticeKernel
    out: list[_Kernel] = []
    if compat_gaussian > 0:
        out.append(make(pos / sxy_gaussian, float(compat_gaussian)))
    if compat_bilateral > 0:
        out.append(
            make(torch.cat([pos / sxy_bilateral, colour / srgb], dim=1), float(compat_bilateral))
        )
    return out


def _mean_field(
    unary_logits: torch.Tensor,
    kernels: list[_Kernel],
    iterations: int,
    weights: list[torch.Tensor] | None = None,
    compatibility: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-field iterations; ``unary_logits`` [N, C] = -U. Returns the final logits [N, C].

    ``weights``: extra (learnable) factors of the kernels' messages, None for none.
    ``compatibility`` None means Potts (the label-independent part dropped); otherwise a [C, C]
    matrix mu(l, l') (CRF-as-RNN learns it).
    """
    logits = unary_logits
    if iterations == 0 or not kernels:
        return logits
    weights = weights if weights is not None else [None] * len(kernels)
    # one pass for all the self-messages that the filtering includes and the model excludes
    self_term = sum(
        k.self_weight if w is None else w * k.self_weight for w, k in zip(weights, kernels)
    )
    for _ in range(iterations):
        q = torch.softmax(logits, dim=1)
        message = None
        for w, kernel in zip(weights, kernels):
            m = kernel.message(q) if w is None else w * kernel.message(q)
            message = m if message is None else message.add_(m)
        message.addcmul_(self_term, q, value=-1.0)
        if compatibility is None:
            logits = message.add_(unary_logits)
        else:
            logits = unary_logits - message @ compatibility.T
    return logits


def dense_crf(
    image,
    probs: torch.Tensor,
    iterations: int = 5,
    sxy_gaussian: float = 3,
    compat_gaussian: float = 3,
    sxy_bilateral: float = 80,
    srgb: float = 13,
    compat_bilateral: float = 10,
    method: Method = "auto",
    *,
    logits: bool = False,
) -> torch.Tensor:
    """Refine a segmentation with a fully connected CRF (Krähenbühl & Koltun, NIPS 2011).

    Args:
        image: RGB image ``[H, W, 3]``, uint8 (0-255), numpy array or tensor.
        probs: class probabilities ``[C, H, W]`` (C >= 2, summing to 1 over C), float tensor or
            array; with ``logits=True``, unnormalised scores ``[C, H, W]`` instead.
        iterations: mean-field steps (0 returns the input distribution).
        sxy_gaussian, compat_gaussian: standard deviation (pixels) and weight of the smoothness
            kernel on positions.
        sxy_bilateral, srgb, compat_bilateral: standard deviations (pixels, RGB levels 0-255) and
            weight of the appearance kernel on positions and colours.
        method: ``"exact"`` (O(N^2) sum), ``"fast"`` (permutohedral lattice) or
            ``"auto"`` (exact up to ``AUTO_EXACT_MAX_PIXELS`` pixels).
        logits: treat ``probs`` as logits (softmax over C is applied first).

    Returns:
        Refined probabilities ``Q`` ``[C, H, W]`` on ``probs``' device, in its float dtype
        (float32 for arrays).
    """
    if isinstance(probs, np.ndarray):
        probs = torch.from_numpy(probs)
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"probs must be a float tensor [C, H, W], got {type(probs).__name__}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a float tensor [C, H, W], got dtype {probs.dtype}")
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape [C, H, W], got {tuple(probs.shape)}")
    if probs.shape[0] < 2:
        raise ValueError(
            "probs needs C >= 2 classes; for a foreground probability p pass "
            "torch.stack([1 - p, p])"
        )
    params = (sxy_gaussian, compat_gaussian, sxy_bilateral, srgb, compat_bilateral)
    _check_params(iterations, method, *params)
    c, height, width = probs.shape
    dtype = probs.dtype if probs.dtype == torch.float64 else torch.float32
    work = probs.detach().to(dtype)
    if not torch.isfinite(work).all():
        raise ValueError("probs contains NaN or infinite values")
    if logits:
        unary_logits = torch.log_softmax(work, dim=0)
    else:
        if work.min() < 0 or work.max() > 1:
            raise ValueError("probs must lie in [0, 1]; pass logits=True for unnormalised scores")
        err = (work.sum(0) - 1).abs().max().item()
        if err > 1e-3:
            raise ValueError(
                f"probs must sum to 1 over the class axis (dim 0 of [C, H, W]); the largest "
                f"deviation is {err:.3g}. Pass logits=True for unnormalised scores."
            )
        unary_logits = torch.log(work.clamp_min(1e-8))  # -U, the unary is -log p
    rgb = _image_tensor(image, height, width, probs.device, dtype)
    if iterations == 0:
        return torch.softmax(unary_logits, dim=0).to(probs.dtype)
    method = _resolve_method(method, height * width)
    with torch.no_grad():
        kernels = _kernels(rgb, *params, method)
        out = _mean_field(unary_logits.reshape(c, -1).T.contiguous(), kernels, iterations)
        q = torch.softmax(out, dim=1)
    return q.T.reshape(c, height, width).to(probs.dtype)


def pairwise_messages(
    image,
    q: torch.Tensor,
    sxy_gaussian: float = 3,
    sxy_bilateral: float = 80,
    srgb: float = 13,
    method: Method = "auto",
) -> dict[str, torch.Tensor]:
    """The two normalised messages of one mean-field step, for looking inside the update.

    Args:
        image: RGB image ``[H, W, 3]`` uint8.
        q: current distribution ``[C, H, W]`` (probabilities).
        sxy_gaussian, sxy_bilateral, srgb: kernel standard deviations as in :func:`dense_crf`.
        method: ``"exact"``, ``"fast"`` or ``"auto"``.

    Returns:
        ``{"smoothness": m_G, "appearance": m_B}``, each ``[C, H, W]``:
        ``m(l)_i = sum_{j != i} k(i, j) / sqrt(d_i d_j) q_j(l)``, before the kernel weights.
        One step of :func:`dense_crf` is
        ``softmax(log p + compat_gaussian m_G + compat_bilateral m_B)``.
    """
    if not isinstance(q, torch.Tensor) or not q.is_floating_point() or q.ndim != 3:
        raise TypeError("q must be a float tensor [C, H, W]")
    _check_params(0, method, sxy_gaussian, 1.0, sxy_bilateral, srgb, 1.0)
    c, height, width = q.shape
    dtype = q.dtype if q.dtype == torch.float64 else torch.float32
    rgb = _image_tensor(image, height, width, q.device, dtype)
    method = _resolve_method(method, height * width)
    with torch.no_grad():
        smooth, appear = _kernels(rgb, sxy_gaussian, 1.0, sxy_bilateral, srgb, 1.0, method)
        flat = q.detach().to(dtype).reshape(c, -1).T.contiguous()
        return {
            name: kernel(flat).T.reshape(c, height, width).to(q.dtype)
            for name, kernel in (("smoothness", smooth), ("appearance", appear))
        }
