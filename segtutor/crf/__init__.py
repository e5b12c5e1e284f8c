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

from segtutor.crf.inference import (
    AUTO_EXACT_MAX_PIXELS,
    Method,
    dense_crf,
    pairwise_messages,
)
from segtutor.crf.inference import (
    _mean_field as _mean_field,  # shown in the CRF chapter (inspect.getsource)
)
from segtutor.crf.layer import DenseCRF

__all__ = ["AUTO_EXACT_MAX_PIXELS", "DenseCRF", "Method", "dense_crf", "pairwise_messages"]
