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
- combinations: :class:`BCEDiceLoss`, :class:`CEDiceLoss`, :class:`DeepSupervisionLoss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtutor.ops.sorting import argsort_rows

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
    "overlap_stats",
    "symmetric_lovasz_hinge",
    "tversky_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- input handling


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_reduction(reduction: Any) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _is_binary(logits: Tensor) -> bool:
    """[B, H, W] and [B, 1, H, W] are binary tasks; [B, C, H, W] with C >= 2 is multi-class."""
    if logits.ndim == 3:
        return True
    if logits.ndim == 4:
        return logits.shape[1] == 1
    raise ValueError(
        f"logits must be [B, H, W], [B, 1, H, W] (binary) or [B, C, H, W] (multi-class), "
        f"got shape {tuple(logits.shape)}"
    )


def _binary_inputs(
    logits: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return logits ``[B, H, W]`` (float), target ``[B, H, W]`` in {0, 1} (logits' dtype,
    0 at ignored pixels) and the bool mask of pixels that count."""
    _check_tensor(logits, "logits")
    _check_tensor(target, "target")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim == 4:
        if logits.shape[1] != 1:
            raise ValueError(f"binary logits must have one channel, got shape {tuple(logits.shape)}")
        logits = logits[:, 0]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.ndim != 3:
        raise ValueError(f"binary logits must be [B, H, W] or [B, 1, H, W], got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"target must match logits: got target {tuple(target.shape)} for logits "
            f"{tuple(logits.shape)} ([B, H, W] or [B, 1, H, W] both)"
        )
    target = target.to(logits.device)
    if ignore_index is not None:
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
    if not _all_zero_or_one(target):
        raise ValueError(
            "binary target must hold values in {0, 1}"
            + (f" (or ignore_index={ignore_index})" if ignore_index is not None else "")
        )
    target = target.to(logits.dtype)
    return logits, target, valid


def _all_zero_or_one(values: Tensor) -> bool:
    """Whether every entry of ``values`` is 0 or 1, found with two reductions: on the CPU the
    boolean masks of a plain ``(v != 0) & (v != 1)`` cost more than some losses they guard."""
    if values.dtype == torch.bool or values.numel() == 0:
        return True
    lo, hi = torch.aminmax(values)
    if not (bool(lo >= 0) and bool(hi <= 1)):  # NaN fails here too
        return False
    if not values.is_floating_point():
        return True
    v = values.reshape(-1)
    # on [0, 1], v (1 - v) >= 0 with 0 only at 0 and 1 (no underflow: the smallest float v > 0
    # keeps v (1 - v) = v), so the sum is 0 exactly when every entry is 0 or 1
    spread = torch.dot(v, 1 - v) if v.dtype in (torch.float32, torch.float64) else (v * (1 - v)).sum()
    return bool(spread == 0)


def _multiclass_inputs(
    logits: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return logits ``[B, C, H, W]``, labels ``[B, H, W]`` (long, 0 at ignored pixels) and the
    bool mask of pixels that count."""
    _check_tensor(logits, "logits")
    _check_tensor(target, "target")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"multi-class logits must be [B, C, H, W] with C >= 2, got {tuple(logits.shape)}")
    if target.is_floating_point():
        raise TypeError(f"multi-class target must hold integer labels (long), got {target.dtype}")
    b, c, h, w = logits.shape
    if target.shape != (b, h, w):
        raise ValueError(f"target must be [B, H, W] = {(b, h, w)} for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    target = target.to(logits.device).long()
    if ignore_index is not None:
        valid = target != ignore_index
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
    if target.numel() == 0:  # aminmax has no value on an empty batch, and no label is wrong
        return logits, target, valid
    lo, hi = torch.aminmax(target.masked_fill(~valid, 0) if ignore_index is not None else target)
    if bool(lo < 0) or bool(hi >= c):  # the mask of bad labels only to name one
        label = int(target[((target < 0) | (target >= c)) & valid][0])
        extra = f" other than ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(f"target has label {label}{extra}; expected labels in [0, {c})")
    return logits, target.masked_fill(~valid, 0), valid


def _no_pixels(x: Tensor) -> Tensor:
    """The loss of a batch without pixels: 0, on ``x``'s graph so ``backward()`` still runs."""
    return x.sum() * 0.0


def _reduce(per_pixel: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Mean over valid pixels (0, not NaN, when there are none), sum, or the map with 0 at
    ignored pixels."""
    per_pixel = per_pixel * valid
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    return per_pixel.sum() / valid.sum().clamp_min(1)


# --------------------------------------------------------------------------- pixel-wise losses


def bce_loss(
    logits: Tensor,
    target: Tensor,
    pos_weight: float | Tensor | None = None,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy on logits ``[B, (1,) H, W]``, target in {0, 1}.

    Uses the stable form ``max(z, 0) - z y + log(1 + exp(-|z|))`` (PyTorch's
    ``binary_cross_entropy_with_logits``), so logits of +-1000 give finite losses and gradients.
    ``pos_weight`` multiplies the loss of positive pixels (e.g. #negatives / #positives).
    """
    _check_reduction(reduction)
    logits, target, valid = _binary_inputs(logits, target, ignore_index)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight,
                                                   reduction="none")
    return _reduce(per_pixel, valid, reduction)


def cross_entropy_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class cross-entropy, logits ``[B, C, H, W]``, labels ``[B, H, W]``.

    ``weight`` ``[C]`` scales the loss of each true class; the mean divides by the summed weights
    of the counted pixels (as ``F.cross_entropy`` does) and is 0 when every pixel is ignored.
    """
    _check_reduction(reduction)
    logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
    w = _class_weights(weight, logits)
    per_pixel = F.cross_entropy(logits, labels, weight=w, reduction="none")
    if reduction != "mean" or w is None:
        return _reduce(per_pixel, valid, reduction)
    den = (w[labels] * valid).sum()
    return (per_pixel * valid).sum() / den.clamp_min(torch.finfo(den.dtype).tiny)


def _class_weights(weight: Tensor | Sequence[float] | None, logits: Tensor) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if w.shape != (logits.shape[1],):
        raise ValueError(f"weight must have one entry per class, shape ({logits.shape[1]},), "
                         f"got {tuple(w.shape)}")
    return w


def focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float | Tensor | Sequence[float] | None = None,
    gamma: float = 2.0,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al., ICCV 2017), binary or multi-class.

    ``p_t`` is the predicted probability of the true class. ``alpha`` is the class-balance
    factor, applied *outside* the log-probability: in the binary case a scalar in [0, 1]
    (``alpha_t = alpha`` for positives and ``1 - alpha`` for negatives); in the multi-class case
    a scalar (a plain multiplier) or one weight per class ``[C]``. ``gamma = 0`` and no alpha
    give the cross-entropy. Mean over counted pixels.
    """
    _check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if _is_binary(logits):
        logits, y, valid = _binary_inputs(logits, target, ignore_index)
        log_pt = -F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if a.ndim != 0 or not 0 <= float(a) <= 1:
                raise ValueError(f"binary alpha must be a scalar in [0, 1], got {alpha!r}")
            alpha_t = a * y + (1 - a) * (1 - y)
        else:
            alpha_t = None
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        log_pt = F.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if a.ndim == 0:
                alpha_t = a
            elif a.shape == (logits.shape[1],):
                alpha_t = a[labels]
            else:
                raise ValueError(f"alpha must be a scalar or have shape ({logits.shape[1]},), "
                                 f"got {tuple(a.shape)}")
        else:
            alpha_t = None
    pt = log_pt.exp()
    per_pixel = -((1 - pt).clamp_min(0) ** gamma) * log_pt
    if alpha_t is not None:
        per_pixel = alpha_t * per_pixel
    return _reduce(per_pixel, valid, reduction)


def ohem_loss(
    logits: Tensor,
    target: Tensor,
    keep: float = 0.25,
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = 255,
) -> Tensor:
    """Online hard example mining: mean of the ``keep`` fraction of largest per-pixel losses.

    Per-pixel BCE (binary logits) or cross-entropy (multi-class, optional class ``weight``);
    only the hardest ``ceil(keep * n_valid)`` counted pixels of the batch get a gradient.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    if _is_binary(logits):
        logits, y, valid = _binary_inputs(logits, target, ignore_index)
        per_pixel = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        per_pixel = F.cross_entropy(logits, labels, weight=_class_weights(weight, logits),
                                    reduction="none")
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return per_pixel.sum() * 0.0
    k = max(1, math.ceil(keep * losses.numel()))
    return losses.topk(k, sorted=False).values.mean()


# --------------------------------------------------------------------------- region overlap


def overlap_stats(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None = 255,
    per_image: bool = False,
    squared: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft intersection ``I = sum p t``, prediction mass ``P = sum p`` (``sum p^2`` if
    ``squared``) and target mass ``T = sum t`` over the counted pixels.

    ``p`` = sigmoid (binary, one class) or softmax (multi-class, ``C`` classes) of the logits;
    ``t`` is the (one-hot) target. Shapes ``[B, K]`` with ``per_image`` else ``[K]``, K = 1 or C.
    """
    if _is_binary(logits):
        logits, t, valid = _binary_inputs(logits, target, ignore_index)
        p = torch.sigmoid(logits)[:, None]
        t = t[:, None]
    else:
        logits, labels, valid = _multiclass_inputs(logits, target, ignore_index)
        p = logits.softmax(1)
        t = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    v = valid[:, None].to(p.dtype)
    p, t = p * v, t * v
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (p * t).sum(dims)
    pred_mass = (p * p if squared else p).sum(dims)
    return inter, pred_mass, t.sum(dims)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    squared: bool = False,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Soft Dice loss ``1 - mean_k (2 I_k + s) / (P_k + T_k + s)`` on logits.

    Binary: the foreground class only. Multi-class: the mean over all ``C`` classes of the
    softmax. ``squared`` uses ``sum p^2 + sum t^2`` in the denominator (Milletari et al.,
    3DV 2016). ``per_image`` computes Dice per image and class, then averages; otherwise the
    sums run over the whole batch. ``smooth`` keeps empty masks finite (an empty target
    predicted empty scores 1).
    """
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    inter, pred_mass, true_mass = overlap_stats(logits, target, ignore_index, per_image, squared)
    if logits.numel() == 0:  # the mean over no images would be NaN
        return _no_pixels(inter)
    dice = (2 * inter + smooth) / (pred_mass + true_mass + smooth).clamp_min(1e-12)
    return 1 - dice.mean()


def tversky_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Tversky loss ``1 - mean_k (I + s) / (I + alpha FP + beta FN + s)`` (Salehi et al., 2017).

    ``FP = P - I``, ``FN = T - I``. ``alpha = beta = 1`` is the soft Jaccard and
    ``alpha = beta = 0.5`` is Dice (Dice's smoothing ``s`` corresponds to ``s / 2`` here); ``beta > alpha`` penalises missed foreground more than false alarms.
    """
    if alpha < 0 or beta < 0 or smooth < 0:
        raise ValueError(f"alpha, beta, smooth must be >= 0, got {alpha}, {beta}, {smooth}")
    inter, pred_mass, true_mass = overlap_stats(logits, target, ignore_index, per_image)
    if logits.numel() == 0:  # the mean over no images would be NaN
        return _no_pixels(inter)
    den = inter + alpha * (pred_mass - inter) + beta * (true_mass - inter) + smooth
    return 1 - ((inter + smooth) / den.clamp_min(1e-12)).mean()


def jaccard_loss(
    logits: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    per_image: bool = False,
    ignore_index: int | None = 255,
) -> Tensor:
    """Soft Jaccard (IoU) loss ``1 - (I + s) / (P + T - I + s)``: :func:`tversky_loss` with
    ``alpha = beta = 1``. Its gradient swings with the size of the masks; see the chapter."""
    return tversky_loss(logits, target, 1.0, 1.0, smooth, per_image, ignore_index)


# --------------------------------------------------------------------------- Lovász


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors.

    ``gt_sorted`` ``[..., N]``: ground truth (0/1) of the pixels ordered by decreasing error.
    Entry ``i`` is ``J(first i+1 pixels wrong) - J(first i pixels wrong)`` with
    ``J = 1 - |gt and pred| / |gt or pred|`` (Berman et al., CVPR 2018, Algorithm 1). Works on
    any leading batch dimensions at once.
    """
    dtype = gt_sorted.dtype if gt_sorted.is_floating_point() else torch.get_default_dtype()
    return _lovasz_grad_(gt_sorted.detach().to(dtype, copy=True))


def _lovasz_grad_(gt_sorted: Tensor) -> Tensor:
    """:func:`lovasz_grad` that overwrites its (float) input with scratch values.

    On the CPU each fresh tensor of a few MB costs page faults comparable to the arithmetic on
    it, so the batched loss works in place where it can.
    """
    n = gt_sorted.shape[-1]
    seen = torch.arange(1, n + 1, device=gt_sorted.device, dtype=gt_sorted.dtype)
    gts = gt_sorted.sum(-1, keepdim=True)
    # with the first `seen` pixels wrong: union = gt pixels + wrongly predicted background,
    # intersection = gts - fg_seen, so J = 1 - intersection / union = seen / union (union >= 1)
    union = gt_sorted.cumsum_(-1).neg_().add_(gts).add_(seen)  # gts + seen - fg_seen
    jaccard = torch.div(seen, union, out=union)
    grad = torch.empty_like(jaccard)
    grad[..., :1] = jaccard[..., :1]
    torch.sub(jaccard[..., 1:], jaccard[..., :-1], out=grad[..., 1:])
    return grad


# the hinge's activations of its errors: the smooth variant and the paper's relu (Lovász-softmax
# uses none, "identity": its errors are already >= 0)
_HINGE_ACTIVATIONS = ("elu+1", "relu")


class _LovaszRows(torch.autograd.Function):
    """``sum_i act(e_(i)) g_i`` per row of ``[R, N]`` errors sorted decreasingly, ``g`` the
    :func:`lovasz_grad` of the labels in that order.

    Both losses' errors are affine in their input ``x`` (logits or probabilities):
    ``e = offset + sign * x`` with ``sign = 1 - 2 gt`` and ``offset`` 1 (hinge) or ``gt``
    (``|gt - p|``), so the function forms them itself and returns the gradient w.r.t. ``x``.
    The order is piecewise constant in the errors, so the loss is linear in the sorted errors and
    its gradient w.r.t. pixel ``i`` is ``act'(e_i)`` times the weight of ``i``'s rank. Scattering
    the weights back to pixel order once gives both: the loss is the plain dot product
    ``sum_i act(e_i) w_i`` and the gradient ``sign_i act'(e_i) w_i``. On the CPU every fresh
    tensor of a few MB costs page faults comparable to the arithmetic on it, hence the in-place
    steps.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, gt: Tensor, offset: Tensor | float, activation: str, valid: Tensor | None
    ) -> Tensor:
        # x [R, N]; gt [R, N] 0/1 in the dtype to count in, 0 where ignored; valid [R, N] bool
        # or None (all count); activation "relu" | "elu+1" | "identity"
        # the same floats as 1 - x (2 gt - 1) and |gt - x|
        errors = torch.rsub(gt, 1, alpha=2).mul_(x).add_(offset)
        if valid is not None:  # ignored pixels sort last, after every counted one
            errors.masked_fill_(~valid, float("-inf"))
        if activation == "relu":
            # threshold (unlike relu) makes -0.0 +0.0, as the nonnegative sort needs; ignored
            # pixels (0 now) tie with the pixels past the margin, whose terms and gradients are 0
            act = F.threshold(errors, 0.0, 0.0, inplace=True)
            perm = argsort_rows(act, descending=True, nonnegative=True)
        elif activation == "identity" and valid is None:
            act = errors  # |gt - x| >= +0.0
            perm = argsort_rows(act, descending=True, nonnegative=True)
        else:
            perm = argsort_rows(errors, descending=True)
            if activation == "elu+1":
                act, slope = F.elu(errors).add_(1), errors.clamp_max_(0).exp_()  # elu'(e)
            else:
                act = errors.clamp_min_(0)
        sorted_gt = gt.gather(1, perm)
        grad = _lovasz_grad_(sorted_gt)
        weights = sorted_gt.scatter_(1, perm, grad)  # w_i = g_rank(i), in sorted_gt's memory
        del grad, perm
        if activation == "identity" and valid is not None:
            weights.masked_fill_(~valid, 0.0)
        loss = torch.linalg.vecdot(act, weights)
        if activation == "relu":
            weights.mul_(act.sign_())
        elif activation == "elu+1":
            weights.mul_(slope)
        ctx.dtype = x.dtype
        ctx.save_for_backward(weights.addcmul_(weights, gt, value=-2))  # times sign = 1 - 2 gt
        return loss  # in the counting dtype, as precise as the weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, ...]:
        (weights,) = ctx.saved_tensors
        return (weights * grad_rows[:, None]).to(ctx.dtype), None, None, None, None


def _lovasz_rows(
    x: Tensor, gt: Tensor, offset: Tensor | float, valid: Tensor | None, activation: str
) -> Tensor:
    """``sum_i act(e_(i)) g_i`` over the last dim of ``[..., N]`` with errors
    ``e = offset + (1 - 2 gt) x`` sorted decreasingly: returns ``[...]``.

    All rows (images, classes) are sorted in one call. Ignored pixels (``valid`` False; None
    means all count) get an error of -inf and ground truth 0, so they sort to the end where they
    cannot change the weights of the counted pixels before them, and their terms are dropped.
    """
    lead, n = x.shape[:-1], x.shape[-1]
    # the weights come from running counts of pixels: exact in float32 up to 2**24 pixels a row
    count_dtype = torch.float64 if n >= 2**24 or x.dtype == torch.float64 else torch.float32
    x, gt = x.reshape(-1, n), gt.reshape(-1, n).to(count_dtype)
    if isinstance(offset, Tensor):
        offset = offset.reshape(-1, n)
    if valid is not None:
        valid = valid.reshape(-1, n)
        gt = gt.masked_fill(~valid, 0.0)
    return _LovaszRows.apply(x, gt, offset, activation, valid).reshape(lead)


def _activation(name: str) -> str:
    if name not in _HINGE_ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(_HINGE_ACTIVATIONS)}, got {name!r}")
    return name


def lovasz_hinge(
    logits: Tensor,
    labels: Tensor,
    per_image: bool = True,
    ignore: int | None = None,
    activation: str = "relu",
) -> Tensor:
    """Binary Lovász hinge loss (Berman et al., CVPR 2018) on logits ``[B, (1,) H, W]``.

    Hinge errors ``e = 1 - z * (2y - 1)`` are sorted decreasingly and dotted with
    :func:`lovasz_grad`; ``activation`` maps the errors first: ``"relu"`` (the paper) or
    ``"elu+1"`` (smooth and never zero, a variant popular in the TGS competition).
    ``per_image``: the loss of each image, averaged (all images sorted in one batched call);
    otherwise one Jaccard loss over the whole batch. ``ignore``: a label value left out.
    A batch without pixels (``B = 0``) gives 0 on the logits' graph, like every loss here.
    """
    act = _activation(activation)
    z, y, valid = _binary_inputs(logits, labels, ignore)
    if z.numel() == 0:
        return _no_pixels(z)
    rows = z.shape[0] if per_image else 1
    valid = valid.reshape(rows, -1) if ignore is not None else None
    return _lovasz_rows(z.reshape(rows, -1), y.reshape(rows, -1), 1.0, valid, act).mean()


def symmetric_lovasz_hinge(
    logits: Tensor,
    labels: Tensor,
    per_image: bool = True,
    ignore: int | None = None,
    activation: str = "relu",
) -> Tensor:
    """Mean of the Lovász hinge for the foreground and for the background (logits and labels
    flipped), so that the IoU of the empty class is optimised too (useful for empty masks)."""
    act = _activation(activation)
    z, y, valid = _binary_inputs(logits, labels, ignore)
    if z.numel() == 0:
        return _no_pixels(z)
    rows = z.shape[0] if per_image else 1
    # the two problems share one sort call: stack them as extra rows
    z2 = torch.cat([z, -z]).reshape(2 * rows, -1)
    y2 = torch.cat([y, 1 - y]).reshape(2 * rows, -1)
    v2 = torch.cat([valid, valid]).reshape(2 * rows, -1) if ignore is not None else None
    return _lovasz_rows(z2, y2, 1.0, v2, act).mean()


def lovasz_softmax(
    probas: Tensor,
    labels: Tensor,
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
    ignore: int | None = None,
) -> Tensor:
    """Lovász-softmax loss (Berman et al., CVPR 2018) on **probabilities** ``[B, C, H, W]``.

    Per class, the errors ``|1[y = c] - p_c|`` are sorted and dotted with :func:`lovasz_grad`.
    ``classes``: ``"present"`` averages over the classes present in the labels (per image when
    ``per_image``), ``"all"`` over every class, a list over those classes. ``per_image``
    averages per-image losses (one batched sort). ``ignore``: a label value left out.
    Raises ValueError when ``probas`` is outside [0, 1] (logits passed by mistake). A batch
    without pixels (``B = 0``) gives 0 on the graph of ``probas``, like every loss here.
    """
    _check_tensor(probas, "probas")
    if probas.is_floating_point() and probas.numel():
        lo, hi = torch.aminmax(probas.detach())
        if float(lo) < -1e-6 or float(hi) > 1 + 1e-6:
            raise ValueError("probas must be probabilities in [0, 1] (apply softmax(1) to "
                             "logits first, or use LovaszSoftmaxLoss, which takes logits)")
    probas, labels, valid = _multiclass_inputs(probas, labels, ignore)
    c = probas.shape[1]
    if isinstance(classes, str):
        if classes not in ("present", "all"):  # `==`, never `is`: see the Losses chapter
            raise ValueError(f"classes must be 'present', 'all' or a list of ints, got {classes!r}")
        chosen = torch.ones(c, dtype=torch.bool, device=probas.device)
    else:
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        if idx.ndim != 1 or idx.numel() == 0 or idx.min() < 0 or idx.max() >= c:
            raise ValueError(f"classes must be a non-empty list of labels in [0, {c}), got {classes!r}")
        chosen = torch.zeros(c, dtype=torch.bool, device=probas.device)
        chosen[idx.to(probas.device)] = True
    if probas.numel() == 0:
        return _no_pixels(probas)

    fg = F.one_hot(labels, c).permute(0, 3, 1, 2).to(probas.dtype)  # [B, C, H, W]
    if per_image:
        fg, p, v = fg.flatten(2), probas.flatten(2), valid.flatten(1)[:, None]  # [B, C, N]
    else:
        fg = fg.transpose(0, 1).reshape(1, c, -1)  # [1, C, B*H*W]
        p = probas.transpose(0, 1).reshape(1, c, -1)
        v = valid.reshape(1, 1, -1)
    v = v.expand_as(p)
    # errors |fg - p| = fg + (1 - 2 fg) p
    losses = _lovasz_rows(p, fg, fg, v if ignore is not None else None, "identity")  # [rows, C]
    weight = chosen.expand_as(losses).clone()
    if isinstance(classes, str) and classes == "present":
        weight &= (fg * v).sum(-1) > 0
    weight = weight.to(losses.dtype)
    # a row without any class to average (all pixels ignored) counts as 0, like the paper's code
    per_row = (losses * weight).sum(-1) / weight.sum(-1).clamp_min(1)
    return per_row.mean()


# --------------------------------------------------------------------------- combinations


def bce_dice_loss(
    logits: Tensor,
    target: Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    pos_weight: float | Tensor | None = None,
    smooth: float = 1.0,
    ignore_index: int | None = 255,
) -> Tensor:
    """``bce_weight * BCE + dice_weight * Dice`` on binary logits."""
    return (bce_weight * bce_loss(logits, target, pos_weight, ignore_index)
            + dice_weight * dice_loss(logits, target, smooth, ignore_index=ignore_index))


def ce_dice_loss(
    logits: Tensor,
    target: Tensor,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    weight: Tensor | Sequence[float] | None = None,
    smooth: float = 1.0,
    ignore_index: int | None = 255,
) -> Tensor:
    """``ce_weight * CE + dice_weight * Dice`` on multi-class logits ``[B, C, H, W]``."""
    return (ce_weight * cross_entropy_loss(logits, target, weight, ignore_index)
            + dice_weight * dice_loss(logits, target, smooth, ignore_index=ignore_index))


# --------------------------------------------------------------------------- nn.Module forms


class _FunctionalLoss(nn.Module):
    """A module that calls ``fn(logits, target, **options)``; the options are fixed at init."""

    fn: Callable[..., Tensor]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        for key, value in options.items():
            if isinstance(value, Tensor):  # class weights follow .to(device)
                self.register_buffer(f"_opt_{key}", value)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        options = {k: getattr(self, f"_opt_{k}", v) for k, v in self.options.items()}
        return type(self).fn(logits, target, **options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class BCEWithLogitsLoss(_FunctionalLoss):
    """Module form of :func:`bce_loss` (logits in)."""

    fn = staticmethod(bce_loss)

    def __init__(self, pos_weight: float | Tensor | None = None, ignore_index: int | None = 255,
                 reduction: str = "mean") -> None:
        _check_reduction(reduction)
        super().__init__(pos_weight=pos_weight, ignore_index=ignore_index, reduction=reduction)


class CrossEntropyLoss(_FunctionalLoss):
    """Module form of :func:`cross_entropy_loss` (finite when every pixel is ignored)."""

    fn = staticmethod(cross_entropy_loss)

    def __init__(self, weight: Tensor | Sequence[float] | None = None,
                 ignore_index: int | None = 255, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction)


class FocalLoss(_FunctionalLoss):
    """Module form of :func:`focal_loss`."""

    fn = staticmethod(focal_loss)

    def __init__(self, alpha: float | Tensor | Sequence[float] | None = None, gamma: float = 2.0,
                 ignore_index: int | None = 255, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        if alpha is not None and not isinstance(alpha, (int, float)):
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
        super().__init__(alpha=alpha, gamma=gamma, ignore_index=ignore_index, reduction=reduction)


class OHEMLoss(_FunctionalLoss):
    """Module form of :func:`ohem_loss`."""

    fn = staticmethod(ohem_loss)

    def __init__(self, keep: float = 0.25, weight: Tensor | Sequence[float] | None = None,
                 ignore_index: int | None = 255) -> None:
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(keep=keep, weight=weight, ignore_index=ignore_index)


class DiceLoss(_FunctionalLoss):
    """Module form of :func:`dice_loss`."""

    fn = staticmethod(dice_loss)

    def __init__(self, smooth: float = 1.0, squared: bool = False, per_image: bool = False,
                 ignore_index: int | None = 255) -> None:
        super().__init__(smooth=smooth, squared=squared, per_image=per_image,
                         ignore_index=ignore_index)


class JaccardLoss(_FunctionalLoss):
    """Module form of :func:`jaccard_loss`."""

    fn = staticmethod(jaccard_loss)

    def __init__(self, smooth: float = 1.0, per_image: bool = False,
                 ignore_index: int | None = 255) -> None:
        super().__init__(smooth=smooth, per_image=per_image, ignore_index=ignore_index)


class TverskyLoss(_FunctionalLoss):
    """Module form of :func:`tversky_loss`."""

    fn = staticmethod(tversky_loss)

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0,
                 per_image: bool = False, ignore_index: int | None = 255) -> None:
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, per_image=per_image,
                         ignore_index=ignore_index)


def _lovasz_hinge_any(logits: Tensor, labels: Tensor, symmetric: bool, **options: Any) -> Tensor:
    fn = symmetric_lovasz_hinge if symmetric else lovasz_hinge
    return fn(logits, labels, **options)


class LovaszHingeLoss(_FunctionalLoss):
    """Module form of :func:`lovasz_hinge` (``symmetric=True``: :func:`symmetric_lovasz_hinge`)."""

    fn = staticmethod(_lovasz_hinge_any)

    def __init__(self, per_image: bool = True, ignore_index: int | None = None,
                 activation: str = "relu", symmetric: bool = False) -> None:
        _activation(activation)
        super().__init__(symmetric=symmetric, per_image=per_image, ignore=ignore_index,
                         activation=activation)


def _lovasz_softmax_logits(logits: Tensor, labels: Tensor, **options: Any) -> Tensor:
    _check_tensor(logits, "logits")
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, C, H, W] with C >= 2, got {tuple(logits.shape)}")
    return lovasz_softmax(logits.softmax(1), labels, **options)


class LovaszSoftmaxLoss(_FunctionalLoss):
    """Lovász-softmax on **logits** ``[B, C, H, W]``: softmax, then :func:`lovasz_softmax`."""

    fn = staticmethod(_lovasz_softmax_logits)

    def __init__(self, classes: str | Sequence[int] = "present", per_image: bool = False,
                 ignore_index: int | None = 255) -> None:
        super().__init__(classes=classes, per_image=per_image, ignore=ignore_index)


class BCEDiceLoss(_FunctionalLoss):
    """Module form of :func:`bce_dice_loss`."""

    fn = staticmethod(bce_dice_loss)

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0,
                 pos_weight: float | Tensor | None = None, smooth: float = 1.0,
                 ignore_index: int | None = 255) -> None:
        super().__init__(bce_weight=bce_weight, dice_weight=dice_weight, pos_weight=pos_weight,
                         smooth=smooth, ignore_index=ignore_index)


class CEDiceLoss(_FunctionalLoss):
    """Module form of :func:`ce_dice_loss`."""

    fn = staticmethod(ce_dice_loss)

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 weight: Tensor | Sequence[float] | None = None, smooth: float = 1.0,
                 ignore_index: int | None = 255) -> None:
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        super().__init__(ce_weight=ce_weight, dice_weight=dice_weight, weight=weight,
                         smooth=smooth, ignore_index=ignore_index)


class DeepSupervisionLoss(nn.Module):
    """Weighted average of ``base`` over a main output and auxiliary outputs at any resolution.

    ``outputs`` may be a tensor (just the main output), a list/tuple ``[main, aux1, ...]`` or a
    dict ``{"out": main, "aux": aux or [aux1, ...]}`` (the train-mode output of the models).
    The target ``[B, H, W]`` (or ``[B, 1, H, W]``) is resized to each output's spatial size with
    nearest-neighbour sampling, so labels (and the ignore value) are never blended. The result is
    ``sum_i w_i L_i / sum_i w_i``.
    """

    def __init__(self, base: nn.Module | Callable[[Tensor, Tensor], Tensor],
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(base):
            raise TypeError(f"base must be a loss callable, got {type(base).__name__}")
        self.base = base
        if weights is not None:
            weights = [float(w) for w in weights]
            if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        self.weights = weights

    @staticmethod
    def _flatten(outputs: Tensor | Sequence[Tensor] | Mapping[str, Any]) -> list[Tensor]:
        if isinstance(outputs, Tensor):
            return [outputs]
        if isinstance(outputs, Mapping):
            if "out" not in outputs:
                raise ValueError(f"dict outputs need an 'out' key, got keys {sorted(outputs)}")
            aux = outputs.get("aux")
            aux = [] if aux is None else [aux] if isinstance(aux, Tensor) else list(aux)
            return [outputs["out"], *aux]
        if isinstance(outputs, (list, tuple)) and all(isinstance(o, Tensor) for o in outputs):
            return list(outputs)
        raise TypeError("outputs must be a tensor, a list of tensors or a dict with 'out'/'aux', "
                        f"got {type(outputs).__name__}")

    @staticmethod
    def resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
        """Nearest-neighbour resize of a label map ``[B, H, W]`` or ``[B, 1, H, W]`` to ``size``."""
        if tuple(target.shape[-2:]) == tuple(size):
            return target
        if target.numel() == 0:  # no labels to sample, and interpolate rejects a size of 0
            return target.new_empty((*target.shape[:-2], *size))
        squeeze = target.ndim == 3
        t = target[:, None] if squeeze else target
        # float64 holds every label exactly; nearest sampling copies values, never blends them
        resized = F.interpolate(t.double(), size=size, mode="nearest-exact").to(target.dtype)
        return resized[:, 0] if squeeze else resized

    def forward(self, outputs: Tensor | Sequence[Tensor] | Mapping[str, Any],
                target: Tensor) -> Tensor:
        outs = self._flatten(outputs)
        weights = self.weights or [1.0] * len(outs)
        if len(weights) != len(outs):
            raise ValueError(f"got {len(outs)} outputs but {len(weights)} weights")
        total = sum(w * self.base(o, self.resize_target(target, o.shape[-2:]))
                    for w, o in zip(weights, outs))
        return total / sum(weights)
