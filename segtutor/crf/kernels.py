"""Message passing of one Gaussian kernel on one image: the interface and the exact O(N^2) sum.

The normalisation (``k~(i, j) = k(i, j) / sqrt(d_i d_j)``) and the removal of self-messages are
shared by every backend; :mod:`segtutor.crf.lattice` is the fast one.
"""

from __future__ import annotations

import torch

_EXACT_CACHE_BYTES = 256 * 2**20  # keep the whole N x N kernel matrix below this size
_CHUNK_BYTES = 64 * 2**20  # otherwise recompute it by blocks of rows of about this size
_TINY = 1e-20


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
