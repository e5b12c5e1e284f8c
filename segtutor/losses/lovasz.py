"""The Lovász extension of the Jaccard loss (Berman et al., CVPR 2018): the binary hinge, its
symmetric form and Lovász-softmax, all batched (one sort call for every image and class)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segtutor.ops.sorting import argsort_rows

from ._inputs import _binary_inputs, _check_tensor, _multiclass_inputs, _no_pixels


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
        ctx: Any,
        x: Tensor,
        gt: Tensor,
        offset: Tensor | float,
        activation: str,
        valid: Tensor | None,
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


def _hinge(
    logits: Tensor,
    labels: Tensor,
    per_image: bool,
    ignore: int | None,
    activation: str,
    symmetric: bool,
) -> Tensor:
    """The Lovász hinge of both public forms: the inputs as rows ``[R, N]`` (one row an image
    with ``per_image``, else one row), with ``symmetric`` the flipped problem (background as
    the class) stacked as extra rows so that one sort call serves both."""
    act = _activation(activation)
    z, y, valid = _binary_inputs(logits, labels, ignore)
    if z.numel() == 0:
        return _no_pixels(z)
    rows = z.shape[0] if per_image else 1
    z, y = z.reshape(rows, -1), y.reshape(rows, -1)
    valid = valid.reshape(rows, -1) if ignore is not None else None
    if symmetric:
        z, y = torch.cat([z, -z]), torch.cat([y, 1 - y])
        valid = torch.cat([valid, valid]) if valid is not None else None
    return _lovasz_rows(z, y, 1.0, valid, act).mean()


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
    return _hinge(logits, labels, per_image, ignore, activation, symmetric=False)


def symmetric_lovasz_hinge(
    logits: Tensor,
    labels: Tensor,
    per_image: bool = True,
    ignore: int | None = None,
    activation: str = "relu",
) -> Tensor:
    """Mean of the Lovász hinge for the foreground and for the background (logits and labels
    flipped), so that the IoU of the empty class is optimised too (useful for empty masks)."""
    return _hinge(logits, labels, per_image, ignore, activation, symmetric=True)


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
            raise ValueError(
                "probas must be probabilities in [0, 1] (apply softmax(1) to "
                "logits first, or use LovaszSoftmaxLoss, which takes logits)"
            )
    probas, labels, valid = _multiclass_inputs(probas, labels, ignore)
    c = probas.shape[1]
    if isinstance(classes, str):
        if classes not in ("present", "all"):  # `==`, never `is`: see the Losses chapter
            raise ValueError(f"classes must be 'present', 'all' or a list of ints, got {classes!r}")
        chosen = torch.ones(c, dtype=torch.bool, device=probas.device)
    else:
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        if idx.ndim != 1 or idx.numel() == 0 or idx.min() < 0 or idx.max() >= c:
            raise ValueError(
                f"classes must be a non-empty list of labels in [0, {c}), got {classes!r}"
            )
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
