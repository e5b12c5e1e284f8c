"""The permutohedral-lattice filter (Adams et al., Eurographics 2010): the fast backend.

Each pixel is splatted onto the d+1 vertices of its enclosing simplex in feature space, the
lattice is blurred along its d+1 directions, and the result is sliced back. The lattice is built
once per image with tensor ops (sorting and searching integer keys, no loop over pixels).
"""

from __future__ import annotations

import math
import warnings

import torch

from segtutor.crf.kernels import _Kernel


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
