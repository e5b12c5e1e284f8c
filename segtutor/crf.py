"""Fully connected CRF post-processing with mean-field inference, in PyTorch (CPU and CUDA).

The model is the dense CRF of Krähenbühl & Koltun (NIPS 2011). Every pixel ``i`` takes a label
``x_i`` and the energy is

    E(x) = sum_i U_i(x_i) + sum_{i != j} mu(x_i, x_j) sum_m w_m k_m(f_i, f_j)

with the unary ``U_i(l) = -log p_i(l)`` taken from a network's probabilities, the Potts
compatibility ``mu(l, l') = [l != l']`` and two Gaussian kernels over pixel features:

- the *smoothness* kernel ``exp(-|p_i - p_j|^2 / (2 sxy_gaussian^2))`` on positions (pixels),
  weight ``compat_gaussian``;
- the *appearance* kernel ``exp(-|p_i - p_j|^2 / (2 sxy_bilateral^2) - |I_i - I_j|^2 / (2 srgb^2))``
  on positions and RGB colours (0-255), weight ``compat_bilateral``.

Mean field replaces the distribution by a product ``Q(x) = prod_i Q_i(x_i)`` and repeats

    Q_i(l) <- softmax_l( -U_i(l) - sum_m w_m sum_{l'} mu(l, l') m^m_i(l') ),
    m^m_i(l') = sum_{j != i} k~_m(i, j) Q_j(l')                                  (message passing)

With Potts, ``sum_l' mu(l, l') m_i(l') = sum_l' m_i(l') - m_i(l)``; the first term is the same for
every label of pixel ``i`` and cancels in the softmax, so the update adds ``w_m m^m_i(l)``.

Kernel normalisation. The kernel matrix is normalised symmetrically,
``k~(i, j) = k(i, j) / sqrt(d_i d_j)`` with ``d_i = sum_{j != i} k(i, j)``, which is what the
authors' released implementation does by default and what the DeepLab defaults below were tuned
with. Without it a pixel in a large uniform region would receive a message thousands of times
larger than its unary (``sum_j k`` grows with ``sxy^2``) and the CRF would erase every label but
one.

The message passing is the whole cost. Two ways to compute it, behind one function:

- ``exact``: the O(N^2) sum over all pixel pairs, by chunks of rows so memory stays bounded (the
  full N x N matrix is kept when it is small). A reference for small images and for tests.
- ``fast``: both kernels with the permutohedral lattice (Adams et al., Eurographics 2010): splat
  each pixel onto the d+1 vertices of its enclosing simplex in feature space (d = 2 for the
  smoothness kernel, 5 for the appearance kernel), blur along the d+1 lattice directions, slice
  back. The lattice is built once per image with tensor ops
  (sorting and searching integer keys, no Python loop over pixels) and reused by every iteration
  and every class.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
from torch import nn

Method = Literal["auto", "exact", "fast"]

AUTO_EXACT_MAX_PIXELS = 64 * 64
"""``method="auto"`` uses the exact sum up to this many pixels and the fast filters above it."""

_EXACT_CACHE_BYTES = 256 * 2**20  # keep the whole N x N kernel matrix below this size
_CHUNK_BYTES = 64 * 2**20  # otherwise recompute it by blocks of rows of about this size
_TINY = 1e-20


# ----------------------------------------------------------------------------------------------
# message passing operators: one per kernel and image, built once, applied every iteration


class _Kernel:
    """Normalised message passing of one kernel on one image, for ``q`` of shape [N, C].

    ``K`` [N, N] is the kernel matrix (its diagonal included), ``D = (K - diag K) 1`` the row sums
    without self-messages. ``message(q) = scale * D^-1/2 K D^-1/2 q`` and
    ``self_weight = scale * diag(K) / D`` [N, 1], so that the message without a pixel's own
    contribution is ``message(q) - self_weight * q``. Subclasses implement ``_apply(v) = K v``,
    set ``diag`` and fold ``scale * D^-1/2`` into their operators in ``_fold`` (which saves
    passes over [N, C] in every iteration).
    """

    diag: torch.Tensor  # [N, 1]
    self_weight: torch.Tensor  # [N, 1]

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fold(self, norm: torch.Tensor, scale: float) -> None:
        raise NotImplementedError

    def message(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _normalise(self, n: int, like: torch.Tensor, scale: float) -> None:
        degree = self._apply(torch.ones(n, 1, dtype=like.dtype, device=like.device)) - self.diag
        norm = degree.clamp_min(_TINY).rsqrt()
        self.self_weight = scale * self.diag * norm.square()
        self._fold(norm, scale)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """The normalised message without self-messages, [N, C]."""
        return self.message(q) - self.self_weight * q


class _ExactKernel(_Kernel):
    """``k(i, j) = exp(-|f_i - f_j|^2 / 2)`` summed over all pairs.

    The features are already divided by sigma.
    """

    def __init__(self, features: torch.Tensor, scale: float = 1.0) -> None:
        self.features = features
        n = features.shape[0]
        size = features.element_size()
        self.matrix = None
        self.rows = max(1, _CHUNK_BYTES // (size * n))
        self.diag = torch.ones(n, 1, dtype=features.dtype, device=features.device)
        if n * n * size <= _EXACT_CACHE_BYTES:
            self.matrix = self._block(0, n)
        self._normalise(n, features, scale)

    def _block(self, start: int, stop: int) -> torch.Tensor:
        # the direct difference (not the |a|^2 + |b|^2 - 2ab expansion) keeps this a reference
        d2 = torch.cdist(
            self.features[start:stop], self.features, compute_mode="donot_use_mm_for_euclid_dist"
        ).square_()
        return torch.exp_(d2.mul_(-0.5))

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return self.matrix @ v
        n = self.features.shape[0]
        out = torch.empty(n, v.shape[1], dtype=v.dtype, device=v.device)
        for start in range(0, n, self.rows):
            stop = min(n, start + self.rows)
            out[start:stop] = self._block(start, stop) @ v
        return out

    def _fold(self, norm: torch.Tensor, scale: float) -> None:
        self.left, self.right = scale * norm, norm
        if self.matrix is not None:
            self.matrix.mul_(self.left).mul_(self.right.T)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return self.matrix @ q
        return self.left * self._apply(self.right * q)


class _SparseApply(torch.autograd.Function):
    """``matrix @ x`` for a fixed sparse CSR matrix.

    Its CSR transpose serves the backward pass.
    """

    @staticmethod
    def forward(
        ctx, matrix: torch.Tensor, transpose: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.transpose = transpose
        # torch.sparse.mm rather than @, which here takes a slow path (dense fill, copies)
        return torch.sparse.mm(matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, torch.sparse.mm(ctx.transpose, grad)


class _SparsePattern:
    """Where the non-zeros are of a [R, K] matrix with ``p`` entries per row, and of its
    transpose."""

    def __init__(self, num_cols: int, col_index: torch.Tensor, by_col: torch.Tensor) -> None:
        """``by_col``: the entries of ``col_index.reshape(-1)`` ordered by column, rows
        ascending."""
        rows, per_row = col_index.shape
        dev = col_index.device
        self.shape = (rows, num_cols)
        counts = torch.bincount(col_index.reshape(-1), minlength=num_cols)
        col_index, self.in_row = col_index.sort(dim=1)  # CSR rows list their columns in order
        self.col = col_index.reshape(-1)
        self.crow = torch.arange(0, rows * per_row + 1, per_row, device=dev)
        # where entry (row, k) landed after sorting its row, to address it in the transpose
        slot = torch.empty_like(self.in_row).scatter_(
            1, self.in_row, torch.arange(per_row, device=dev).expand(rows, per_row).contiguous()
        )
        self.t_col = torch.div(by_col, per_row, rounding_mode="floor")
        self.by_col = self.t_col * per_row + slot.reshape(-1).index_select(0, by_col)
        self.t_crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def matrices(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrix with ``values`` [R, p] (in the original column order) and its transpose."""
        flat = values.gather(1, self.in_row).reshape(-1)
        rows, cols = self.shape
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            matrix = torch.sparse_csr_tensor(
                self.crow, self.col, flat, (rows, cols), check_invariants=False
            )
            transpose = torch.sparse_csr_tensor(
                self.t_crow,
                self.t_col,
                flat.index_select(0, self.by_col),
                (cols, rows),
                check_invariants=False,
            )
        return matrix, transpose


class _LatticeKernel(_Kernel):
    """Permutohedral-lattice approximation of ``exp(-|f_i - f_j|^2 / 2)`` (Adams et al., 2010).

    Built once from the features [N, d]: for each pixel the d+1 lattice vertices of its simplex
    and its barycentric weights there, stored as a sparse "slice" matrix S [N, M] whose transpose
    splats; for each of the M lattice points its two neighbours along each of the d+1 lattice
    directions (``neighbours`` [d+1, 2, M]; index M is a zero row standing for a point that holds
    no pixel). ``K v = alpha S B S^T v`` with B the blur.
    """

    def __init__(self, features: torch.Tensor, scale: float = 1.0) -> None:
        n, d = features.shape
        with torch.no_grad():
            index, self.weight, by_vertex = self._build(features)
            self.pattern = _SparsePattern(self.size, index, by_vertex)
            self.slice, self.splat = self.pattern.matrices(self.weight)
            # The filter's weight of a pixel on itself, from the blur's structure: vertices r and
            # r' of one simplex are k = |r - r'| lattice steps apart and the d+1 passes of
            # [1/2, 1, 1/2] connect them with weight 2^-k + 2^-(d+1-k) (1 + 2^-d when k = 0).
            # Lattice points missing from the table make this a slight overestimate.
            k = torch.arange(d + 1, device=features.device, dtype=features.dtype)
            steps = (k[:, None] - k[None, :]).abs()
            blur = torch.where(steps == 0, 1 + 2.0**-d, 2.0**-steps + 2.0 ** (steps - d - 1))
            diag = self.alpha * torch.einsum("nr,rs,ns->n", self.weight, blur, self.weight)
            self.diag = diag[:, None]
            self._normalise(n, features, scale)

    def _blur(self, values: torch.Tensor) -> torch.Tensor:
        zero = values.new_zeros(1, values.shape[1])
        for j in range(self.neighbours.shape[0]):  # d+1 directions, not pixels
            padded = torch.cat([values, zero])
            around = padded.index_select(0, self.neighbours[j, 0]) + padded.index_select(
                0, self.neighbours[j, 1]
            )
            values = values + 0.5 * around
        return values

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.alpha * torch.sparse.mm(self.slice, self._blur(torch.sparse.mm(self.splat, v)))

    def _fold(self, norm: torch.Tensor, scale: float) -> None:
        # scale * D^-1/2 alpha S B S^T D^-1/2: both diagonal factors go into the sparse values
        self.msg_slice, self.msg_slice_t = self.pattern.matrices(
            self.weight * (scale * self.alpha * norm)
        )
        self.msg_unsplat, self.msg_splat = self.pattern.matrices(self.weight * norm)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        values = _SparseApply.apply(self.msg_splat, self.msg_unsplat, q)  # [M, C]
        return _SparseApply.apply(self.msg_slice, self.msg_slice_t, self._blur(values))  # [N, C]

    def _build(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, d = features.shape
        dev, dt = features.device, features.dtype
        # scale so that the [1 2 1] blur along d+1 directions has unit standard deviation
        i = torch.arange(d, device=dev, dtype=dt)
        scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((i + 1) * (i + 2))
        cf = features * scale
        # project onto the plane sum(x) = 0 of R^(d+1): orthogonal columns of equal norm
        suffix = cf.flip(1).cumsum(1).flip(1)
        tail = torch.cat([suffix[:, 1:], torch.zeros(n, 1, device=dev, dtype=dt)], dim=1)
        elevated = torch.cat([suffix[:, :1], tail - (i + 1) * cf], dim=1)  # [N, d+1]
        # nearest "remainder-0" lattice point: every coordinate a multiple of d+1
        rem0 = torch.round(elevated / (d + 1)) * (d + 1)
        total = torch.round(rem0.sum(1) / (d + 1)).long()
        # rank[:, c]: how many coordinates have a larger residual (ties: the lower index first);
        # this ordering picks the simplex that contains the point
        order = torch.sort(elevated - rem0, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(d + 1, device=dev).expand(n, d + 1).contiguous()
        )
        # bring the rounded point back onto the plane (its coordinates must sum to zero)
        rank = rank + total[:, None]
        low, high = rank < 0, rank > d
        rank = torch.where(low, rank + d + 1, torch.where(high, rank - d - 1, rank))
        rem0 = torch.where(low, rem0 + d + 1, torch.where(high, rem0 - d - 1, rem0))
        # barycentric coordinates of the point in its simplex
        v = (elevated - rem0) / (d + 1)
        bary = torch.zeros(n, d + 2, device=dev, dtype=dt)
        bary.scatter_add_(1, d - rank, v)
        bary.scatter_add_(1, d - rank + 1, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        weight = bary[:, : d + 1].contiguous()
        # integer keys of the d+1 vertices (the first d coordinates; the last follows from
        # sum = 0), each packed into one int64 (mixed radix) with room for the blur's neighbours
        base = rem0[:, :d].long()
        low_key = base.min(0).values - 2 * (d + 1)
        span = (base.max(0).values + 2 * (d + 1) - low_key + 1).tolist()
        if math.prod(span) >= 2**62:
            raise ValueError(
                "the lattice is too large to index: the bilateral kernel's bandwidths "
                "(sxy_bilateral, srgb) are too small for this image; use method='exact'"
            )
        strides = [1] * d
        for c in range(d - 2, -1, -1):
            strides[c] = strides[c + 1] * span[c + 1]
        strides_t = torch.tensor(strides + [0], device=dev, dtype=torch.long)
        base_code = ((base - low_key) * strides_t[:d]).sum(1)
        # vertex r = vertex 0 + r on every coordinate - (d+1) on the r coordinates of highest
        # rank; stride_by_rank[:, k] is the stride of the coordinate of rank k
        stride_by_rank = torch.zeros_like(rank).scatter_(1, rank, strides_t.expand(n, d + 1))
        wrapped = torch.cat([torch.zeros_like(total[:, None]), stride_by_rank[:, 1:].flip(1)], 1)
        r = torch.arange(d + 1, device=dev)
        codes = base_code[:, None] + r * sum(strides) - (d + 1) * wrapped.cumsum(1)
        # distinct keys = lattice points; one stable sort gives them, each vertex's point, and the
        # vertices grouped by point with pixels in order (the transpose of the slice matrix)
        sorted_codes, by_vertex = torch.sort(codes.reshape(-1), stable=True)
        fresh = torch.ones_like(sorted_codes, dtype=torch.bool)
        fresh[1:] = sorted_codes[1:] != sorted_codes[:-1]
        lattice = sorted_codes[fresh]
        inverse = torch.empty_like(by_vertex).scatter_(0, by_vertex, fresh.cumsum(0) - 1)
        self.size = lattice.numel()
        # neighbours along direction j: key - 1 everywhere except +d at coordinate j (j < d)
        minus_one = -sum(strides)
        neighbours = []
        for j in range(d + 1):  # d+1 directions: a loop over dimensions, not pixels
            step = minus_one + (d + 1) * strides[j] if j < d else minus_one
            pair = [self._lookup(lattice, lattice + step), self._lookup(lattice, lattice - step)]
            neighbours.append(torch.stack(pair))
        self.neighbours = torch.stack(neighbours)  # [d+1, 2, M]
        self.alpha = 1.0 / (1.0 + 2.0**-d)
        return inverse.view(n, d + 1), weight, by_vertex

    @staticmethod
    def _lookup(table: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(table, queries).clamp_max(table.numel() - 1)
        return torch.where(table.index_select(0, pos) == queries, pos, table.numel())


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


def _check_params(iterations: int, method: str, **params: float) -> None:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if method not in ("auto", "exact", "fast"):
        raise ValueError(f"method must be 'auto', 'exact' or 'fast', got {method!r}")
    for name, value in params.items():
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise TypeError(f"{name} must be a finite number, got {value!r}")
        if name.startswith("compat"):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        elif value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")


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
    _check_params(
        iterations,
        method,
        sxy_gaussian=sxy_gaussian,
        compat_gaussian=compat_gaussian,
        sxy_bilateral=sxy_bilateral,
        srgb=srgb,
        compat_bilateral=compat_bilateral,
    )
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
        kernels = _kernels(
            rgb, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb, compat_bilateral, method
        )
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
    _check_params(0, method, sxy_gaussian=sxy_gaussian, sxy_bilateral=sxy_bilateral, srgb=srgb)
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


class DenseCRF(nn.Module):
    """Mean-field dense CRF as a differentiable layer (CRF-as-RNN, Zheng et al., ICCV 2015).

    Each mean-field step is a fixed set of tensor operations (message passing, weighting,
    compatibility transform, adding the unary, softmax), so gradients flow from a loss on the
    output back to the network's scores and, with ``learnable=True``, to the two kernel weights
    and the class compatibility matrix (initialised to Potts, ``1 - I``). The kernel bandwidths
    stay fixed, as in CRF-as-RNN. With the default Potts initialisation the output's softmax is
    exactly :func:`dense_crf` with the same parameters.

    forward(logits ``[B, C, H, W]``, images ``[B, 3, H, W]`` RGB in 0-255, uint8 or float)
    returns logits ``[B, C, H, W]`` (``softmax`` over C gives Q), ready for ``cross_entropy``.
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        sxy_gaussian: float = 3,
        compat_gaussian: float = 3,
        sxy_bilateral: float = 80,
        srgb: float = 13,
        compat_bilateral: float = 10,
        learnable: bool = False,
        method: Method = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        _check_params(
            iterations,
            method,
            sxy_gaussian=sxy_gaussian,
            compat_gaussian=compat_gaussian,
            sxy_bilateral=sxy_bilateral,
            srgb=srgb,
            compat_bilateral=compat_bilateral,
        )
        self.num_classes = num_classes
        self.iterations = iterations
        self.sxy_gaussian, self.sxy_bilateral, self.srgb = sxy_gaussian, sxy_bilateral, srgb
        self.method = method
        weights = torch.tensor([float(compat_gaussian), float(compat_bilateral)])
        potts = 1.0 - torch.eye(num_classes)
        if learnable:
            self.kernel_weights = nn.Parameter(weights)
            self.compatibility = nn.Parameter(potts)
        else:
            self.register_buffer("kernel_weights", weights)
            self.register_buffer("compatibility", potts)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, iterations={self.iterations}, "
            f"sxy_gaussian={self.sxy_gaussian}, sxy_bilateral={self.sxy_bilateral}, "
            f"srgb={self.srgb}, method={self.method!r}"
        )

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if (
            not isinstance(logits, torch.Tensor)
            or not logits.is_floating_point()
            or logits.ndim != 4
        ):
            raise TypeError("logits must be a float tensor [B, C, H, W]")
        b, c, height, width = logits.shape
        if c != self.num_classes:
            raise ValueError(f"logits have {c} classes, the CRF was built for {self.num_classes}")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "images must be a tensor [B, 3, H, W] (RGB, 0-255), "
                f"got {getattr(images, 'shape', None)}"
            )
        if images.shape[0] != b or tuple(images.shape[2:]) != (height, width):
            raise ValueError(
                f"images {tuple(images.shape)} and logits {tuple(logits.shape)} "
                "must agree on B, H and W"
            )
        method = _resolve_method(self.method, height * width)
        wg, wb = self.kernel_weights[0], self.kernel_weights[1]
        outputs = []
        for k in range(b):  # one lattice per image
            rgb = images[k].detach().permute(1, 2, 0).to(logits.dtype)
            with torch.no_grad():
                ops = _kernels(
                    rgb, self.sxy_gaussian, 1.0, self.sxy_bilateral, self.srgb, 1.0, method
                )
            unary = torch.log_softmax(logits[k], dim=0).reshape(c, -1).T
            out = _mean_field(
                unary, ops, self.iterations, [wg, wb], self.compatibility.to(logits.dtype)
            )
            outputs.append(out.T.reshape(c, height, width))
        return torch.stack(outputs)
