"""Segmentation losses, each as a function and as an ``nn.Module``.

Conventions (DESIGN.md): every loss takes **logits** unless its name says probabilities.

- binary: logits ``[B, 1, H, W]`` or ``[B, H, W]``, target of the same shape with values in {0, 1}
  (float, int or bool);
- multi-class: logits ``[B, C, H, W]`` with ``C >= 2``, target long ``[B, H, W]`` with labels in
  ``[0, C)``;
- ``ignore_index`` (default 255) marks target pixels that take no part in the loss, in both cases.
  An image whose pixels are all ignored contributes 0 (with zero gradient), never NaN.
- a batch without pixels (``B = 0``, an empty last batch or a filtered one; or ``H*W = 0``) is
  not an error: every loss, function and module, returns 0 (``reduction="none"``: the empty
  map), computed as ``x.sum() * 0`` so that it stays on the input's graph and ``backward()``
  runs (the gradient is empty). 0 is what a sum over no pixels gives, what an all-ignored batch
  already gets, and what the Lovász authors' code returns for an image without pixels.

Mean reductions average over the non-ignored pixels. The families:

- pixel-wise: :func:`bce_loss`, :func:`cross_entropy_loss` (class weights), :func:`focal_loss`
  (Lin et al., ICCV 2017), :func:`ohem_loss` (the hardest fraction of pixels);
- region overlap: :func:`dice_loss` (Milletari et al., 3DV 2016), :func:`jaccard_loss`,
  :func:`tversky_loss` (Salehi et al., MLMI 2017);
- the Lovász extension of the Jaccard loss (Berman et al., CVPR 2018): :func:`lovasz_hinge`,
  :func:`symmetric_lovasz_hinge`, :func:`lovasz_softmax`, all batched (one sort for all images);
- combinations: :class:`BCEDiceLoss`, :class:`CEDiceLoss`;
- criteria over a model's whole output ``{"out", "aux"}`` (:mod:`.composite`):
  :class:`WithAuxiliary` (main loss plus weighted auxiliary losses), :class:`DeepSupervisionLoss`
  (auxiliary outputs at any resolution).

One module a family: :mod:`.pixel`, :mod:`.overlap`, :mod:`.lovasz`, :mod:`.modules` (the
combinations and the ``nn.Module`` forms), :mod:`.composite`; every name is re-exported here.
"""

from __future__ import annotations

from .composite import DeepSupervisionLoss, WithAuxiliary, output_criterion
from .lovasz import (  # the private three: the Losses chapter shows them as losses.<name>
    _lovasz_grad_,  # noqa: F401
    _lovasz_rows,  # noqa: F401
    _LovaszRows,  # noqa: F401
    lovasz_grad,
    lovasz_hinge,
    lovasz_softmax,
    symmetric_lovasz_hinge,
)
from .modules import (
    BCEDiceLoss,
    BCEWithLogitsLoss,
    CEDiceLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    OHEMLoss,
    TverskyLoss,
    bce_dice_loss,
    ce_dice_loss,
)
from .overlap import dice_loss, jaccard_loss, overlap_stats, tversky_loss
from .pixel import bce_loss, cross_entropy_loss, focal_loss, ohem_loss

__all__ = [
    "BCEDiceLoss",
    "BCEWithLogitsLoss",
    "CEDiceLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "OHEMLoss",
    "TverskyLoss",
    "WithAuxiliary",
    "bce_dice_loss",
    "bce_loss",
    "ce_dice_loss",
    "cross_entropy_loss",
    "dice_loss",
    "focal_loss",
    "jaccard_loss",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
    "ohem_loss",
    "output_criterion",
    "overlap_stats",
    "symmetric_lovasz_hinge",
    "tversky_loss",
]
