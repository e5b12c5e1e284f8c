"""Losses against PyTorch's own ops, hand-worked values and the papers' definitions.

The Lovász losses are checked against a plain per-image, per-pixel reference written here from
Algorithm 1 of Berman et al. (CVPR 2018), value and gradient, and against the defining property
of the Lovász extension: on hard predictions it equals the Jaccard loss 1 - IoU.
"""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.nn.functional as F

from segtutor import losses as L
from segtutor import metrics as M

DT = torch.float64


def _binary_batch(b=3, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(b, h, w, generator=g, dtype=DT)).requires_grad_()
    target = (torch.rand(b, h, w, generator=g) < 0.4).to(DT)
    return logits, target


def _multi_batch(b=3, c=4, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=DT).requires_grad_()
    target = torch.randint(0, c, (b, h, w), generator=g)
    return logits, target


def _grad(loss_fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_()
    value = loss_fn(x, *args, **kwargs)
    (g,) = torch.autograd.grad(value, x)
    return value.detach(), g


# ----------------------------------------------------------------------------- cross-entropy


def test_bce_matches_formula_and_torch():
    z, y = _binary_batch()
    naive = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    assert torch.allclose(L.bce_loss(z, y), naive)
    pw = torch.tensor(3.0, dtype=DT)
    ref = F.binary_cross_entropy_with_logits(z, y, pos_weight=pw)
    assert torch.allclose(L.bce_loss(z[:, None], y[:, None], pos_weight=3.0), ref)


def test_bce_stable_at_extreme_logits():
    z = torch.tensor([[[1000.0, -1000.0]]], requires_grad=True)
    y = torch.tensor([[[0.0, 1.0]]])
    loss = L.bce_loss(z, y)
    loss.backward()
    assert loss.item() == pytest.approx(1000.0)
    assert torch.isfinite(z.grad).all()


def test_bce_ignore_index_drops_pixels():
    z, y = _binary_batch()
    y_ign = y.clone()
    y_ign[0, :2] = 255
    keep = y_ign != 255
    ref = F.binary_cross_entropy_with_logits(z[keep], y[keep])
    assert torch.allclose(L.bce_loss(z, y_ign), ref)


def test_cross_entropy_matches_torch_with_weights_and_ignore():
    x, t = _multi_batch()
    t[1, 0] = 255
    w = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=DT)
    ref = F.cross_entropy(x, t, weight=w, ignore_index=255)
    assert torch.allclose(L.cross_entropy_loss(x, t, weight=w), ref)
    assert torch.allclose(L.CrossEntropyLoss(weight=w)(x, t), ref)


def test_all_ignored_gives_zero_not_nan():
    x, t = _multi_batch()
    t[:] = 255
    assert torch.isnan(F.cross_entropy(x, t, ignore_index=255))  # why we do our own mean
    for fn in (
        L.cross_entropy_loss,
        L.focal_loss,
        L.ohem_loss,
        L.dice_loss,
        L.ce_dice_loss,
        L.LovaszSoftmaxLoss(),
    ):
        v, g = _grad(fn, x, t)
        assert torch.isfinite(v) and torch.isfinite(g).all(), fn
    v, g = _grad(L.lovasz_hinge, _binary_batch()[0], torch.full((3, 6, 7), 255.0), ignore=255)
    assert v.item() == 0 and torch.isfinite(g).all()


# ----------------------------------------------------------------------------- focal


def test_focal_hand_worked_binary():
    p = torch.tensor([0.9, 0.2], dtype=DT)
    z = torch.logit(p).reshape(1, 1, 2)
    y = torch.tensor([[[1.0, 0.0]]], dtype=DT)
    # p_t = 0.9 and 0.8; alpha_t = 0.25 (positive) and 0.75 (negative)
    expected = (0.25 * 0.1**2 * -math.log(0.9) + 0.75 * 0.2**2 * -math.log(0.8)) / 2
    assert L.focal_loss(z, y, alpha=0.25, gamma=2).item() == pytest.approx(expected)


def test_focal_gamma0_is_cross_entropy_and_alpha_is_outside_the_log():
    x, t = _multi_batch()
    assert torch.allclose(L.focal_loss(x, t, gamma=0.0), F.cross_entropy(x, t))
    a = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DT)
    logp = F.log_softmax(x, 1).gather(1, t[:, None])[:, 0]
    ref = (-a[t] * (1 - logp.exp()) ** 2 * logp).mean()
    assert torch.allclose(L.focal_loss(x, t, alpha=a, gamma=2.0), ref)
    assert torch.allclose(
        L.FocalLoss(alpha=a.tolist(), gamma=2.0)(x, t), ref.float().double(), atol=1e-6
    )


def test_focal_downweights_easy_pixels():
    z = torch.tensor([[[4.0, 0.1]]], dtype=DT)  # an easy and a hard positive
    y = torch.ones(1, 1, 2, dtype=DT)
    bce = L.bce_loss(z, y, reduction="none")[0, 0]
    fl = L.focal_loss(z, y, gamma=2.0, reduction="none")[0, 0]
    ratio = fl / bce  # (1 - p_t)^2
    assert torch.allclose(ratio, (1 - torch.sigmoid(z[0, 0])) ** 2)
    assert ratio[0] < 1e-3
    assert ratio[1] > 0.2


def _buggy_focal(logits, target, alpha, gamma=2.0):
    # The widely copied version: class weights go into CrossEntropy as `weight`, so
    # exp(-ce) is p_t ** alpha_t rather than p_t.
    ce = F.cross_entropy(logits, target, weight=alpha, reduction="none")
    pt = torch.exp(-ce)
    return ((1 - pt) ** gamma * ce).mean()


def test_erratum_focal_alpha_inside_cross_entropy():
    x, t = _multi_batch()
    a = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DT)
    pt_true = F.softmax(x, 1).gather(1, t[:, None])[:, 0]
    ce = F.cross_entropy(x, t, weight=a, reduction="none")
    assert not torch.allclose(torch.exp(-ce), pt_true)  # the "p_t" of the buggy code
    assert torch.allclose(torch.exp(-ce), pt_true ** a[t])
    assert not torch.allclose(_buggy_focal(x, t, a), L.focal_loss(x, t, alpha=a), rtol=1e-2)


def test_erratum_focal_reduction_none_and_sum_without_call():
    x, t = _multi_batch()
    with pytest.raises(ValueError, match="reduction"):
        L.focal_loss(x, t, reduction=None)
    per_pixel = L.focal_loss(x, t, reduction="none")
    buggy = per_pixel.sum  # `return loss.sum`: a bound method, not a number
    assert callable(buggy) and not isinstance(buggy, torch.Tensor)
    assert torch.allclose(per_pixel.sum(), L.focal_loss(x, t, reduction="sum"))


# ----------------------------------------------------------------------------- OHEM


def test_ohem_keeps_the_hardest_fraction():
    z, y = _binary_batch()
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none").flatten()
    k = math.ceil(0.25 * per.numel())
    ref = per.sort(descending=True).values[:k].mean()
    v, g = _grad(L.ohem_loss, z, y, keep=0.25)
    assert torch.allclose(v, ref)
    assert int((g != 0).sum()) == k  # only the kept pixels learn
    assert torch.allclose(L.ohem_loss(z, y, keep=1.0), L.bce_loss(z, y))
    x, t = _multi_batch()
    assert torch.allclose(L.OHEMLoss(keep=1.0)(x, t), F.cross_entropy(x, t))


# ----------------------------------------------------------------------------- Dice & co


def test_dice_hand_worked_and_gradient():
    p = torch.tensor([[0.8, 0.6], [0.1, 0.3]], dtype=DT)
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=DT)
    z = torch.logit(p)[None].requires_grad_()
    inter, psum, tsum = 0.8 + 0.6 + 0.3, 1.8, 3.0
    assert L.dice_loss(z, t[None], smooth=0).item() == pytest.approx(1 - 2 * inter / (psum + tsum))
    sq = 0.64 + 0.36 + 0.01 + 0.09
    assert L.dice_loss(z, t[None], smooth=0, squared=True).item() == pytest.approx(
        1 - 2 * inter / (sq + tsum)
    )
    # d(1 - 2I/(P+T))/dp_i = -(2 t_i (P+T) - 2I) / (P+T)^2; chain rule through the sigmoid
    L.dice_loss(z, t[None], smooth=0).backward()
    dl_dp = -(2 * t * (psum + tsum) - 2 * inter) / (psum + tsum) ** 2
    assert torch.allclose(z.grad[0], dl_dp * p * (1 - p))


def test_dice_perfect_empty_and_per_image():
    y = torch.zeros(2, 1, 5, 5, dtype=DT)
    y[0, 0, 1:3, 1:4] = 1
    perfect = 30 * (2 * y - 1)
    assert L.dice_loss(perfect, y).item() == pytest.approx(0, abs=1e-6)
    empty = torch.zeros(1, 5, 5, dtype=DT)
    assert L.dice_loss(torch.full((1, 5, 5), -30.0, dtype=DT), empty).item() == pytest.approx(
        0, abs=1e-6
    )
    v, g = _grad(L.dice_loss, torch.zeros(1, 5, 5, dtype=DT), empty, smooth=0)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    # per-image: an empty image predicted wrong counts as much as a big one
    z = perfect.clone()
    z[1, 0, 0, 0] = 30  # one false-positive pixel on the empty image
    batch = L.dice_loss(z, y, smooth=1).item()
    per_img = L.dice_loss(z, y, smooth=1, per_image=True).item()
    assert batch == pytest.approx(1 - (2 * 6 + 1) / (7 + 6 + 1), rel=1e-6)
    assert per_img == pytest.approx(1 - (1 + 1 / 2) / 2, rel=1e-6)


def test_multiclass_dice_is_mean_over_classes():
    x, t = _multi_batch()
    p = x.softmax(1)
    dices = []
    for c in range(4):
        pc, tc = p[:, c], (t == c).to(DT)
        dices.append((2 * (pc * tc).sum() + 1) / (pc.sum() + tc.sum() + 1))
    assert torch.allclose(L.dice_loss(x, t), 1 - torch.stack(dices).mean())


def test_jaccard_and_tversky_special_cases():
    z, y = _binary_batch()
    p = torch.sigmoid(z)
    i, s = (p * y).sum(), p.sum() + y.sum()
    assert torch.allclose(L.jaccard_loss(z, y, smooth=0), 1 - i / (s - i))
    assert torch.allclose(L.tversky_loss(z, y, 1.0, 1.0, smooth=0), L.jaccard_loss(z, y, smooth=0))
    assert torch.allclose(L.tversky_loss(z, y, 0.5, 0.5, smooth=0.5), L.dice_loss(z, y, smooth=1))
    # beta > alpha: missing foreground costs more than a false alarm
    miss = torch.full_like(y, -3.0)  # predicts (almost) nothing
    assert L.tversky_loss(miss, y, 0.3, 0.7) > L.tversky_loss(miss, y, 0.7, 0.3)


def _buggy_dice_flatten_twice(pred, target, smooth=1.0):
    iflat = pred.reshape(-1)
    tflat = pred.reshape(-1)  # the copy-paste slip: should be target
    inter = (iflat * tflat).sum()
    return 1 - (2 * inter + smooth) / (iflat.sum() + tflat.sum() + smooth)


def test_erratum_dice_flattens_output_twice():
    z, y = _binary_batch()
    p = torch.sigmoid(z)
    other = 1 - y
    # the buggy loss does not look at the target at all
    assert _buggy_dice_flatten_twice(p, y) == _buggy_dice_flatten_twice(p, other)
    assert not torch.allclose(L.dice_loss(z, y), L.dice_loss(z, other))


def test_erratum_one_hot_with_misspelled_zeros():
    labels = torch.tensor([[0, 2], [1, 2]])
    with pytest.raises(AttributeError):
        torch.empty(1, 3, 2, 2)._zeros()  # the snippet's misspelling of .zero_()
    one_hot = torch.empty(1, 3, 2, 2).zero_().scatter_(1, labels[None, None], 1.0)
    assert torch.equal(one_hot, F.one_hot(labels, 3).permute(2, 0, 1)[None].float())
    # overlap_stats builds the same one-hot internally: T = pixel count of each class
    _, _, tsum = L.overlap_stats(torch.zeros(1, 3, 2, 2), labels[None])
    assert tsum.tolist() == [1.0, 1.0, 2.0]


# ----------------------------------------------------------------------------- Lovász


def _jaccard_set_loss(n_fg: int, wrong_fg: int, wrong_bg: int) -> float:
    """Delta_J(M) for a set M of mispredicted pixels: 1 - |F minus M| / |F union M|."""
    union = n_fg + wrong_bg
    return 1.0 - (n_fg - wrong_fg) / union if union > 0 else 0.0


def _lovasz_flat_reference(errors: torch.Tensor, fg: torch.Tensor, act=torch.relu) -> torch.Tensor:
    """Algorithm 1 of Berman et al., one image, one class, pixel by pixel.

    Sort errors decreasingly; the i-th sorted pixel's weight is Delta_J(first i+1) - Delta_J(first
    i), where the first i pixels are taken as mispredicted.
    """
    if errors.numel() == 0:
        return errors.sum() * 0
    order = torch.argsort(errors.detach(), descending=True, stable=True)  # ties: index order
    e, g = errors[order], fg[order]
    n_fg = int(g.sum())
    weights, prev, wrong_fg, wrong_bg = [], 0.0, 0, 0
    for gi in g.tolist():
        if gi > 0.5:
            wrong_fg += 1
        else:
            wrong_bg += 1
        cur = _jaccard_set_loss(n_fg, wrong_fg, wrong_bg)
        weights.append(cur - prev)
        prev = cur
    return (act(e) * torch.tensor(weights, dtype=e.dtype)).sum()


def _hinge_reference(logits, labels, per_image=True, ignore=None, act=torch.relu):
    if not per_image:
        logits, labels = logits.reshape(1, -1), labels.reshape(1, -1)
    losses = []
    for z, y in zip(logits, labels):
        z, y = z.reshape(-1), y.reshape(-1)
        if ignore is not None:
            keep = y != ignore
            z, y = z[keep], y[keep]
        losses.append(_lovasz_flat_reference(1 - z * (2 * y - 1), y, act))
    return torch.stack(losses).mean()


def _softmax_reference(probas, labels, classes="present", per_image=False, ignore=None):
    if not per_image:
        probas = probas.transpose(0, 1).reshape(1, probas.shape[1], -1)
        labels = labels.reshape(1, -1)
    losses = []
    for p, y in zip(probas, labels):
        p, y = p.reshape(p.shape[0], -1), y.reshape(-1)
        if ignore is not None:
            keep = y != ignore
            p, y = p[:, keep], y[keep]
        per_class = []
        for c in range(p.shape[0]) if isinstance(classes, str) else classes:
            fg = (y == c).to(p.dtype)
            if classes == "present" and fg.sum() == 0:
                continue
            per_class.append(_lovasz_flat_reference((fg - p[c]).abs(), fg, act=lambda e: e))
        losses.append(torch.stack(per_class).mean() if per_class else p.sum() * 0)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("activation", ["relu", "elu+1"])
@pytest.mark.parametrize("with_ignore", [False, True])
def test_lovasz_hinge_matches_reference_value_and_gradient(per_image, activation, with_ignore):
    z, y = _binary_batch(seed=1)
    ignore = None
    if with_ignore:
        y = y.clone()
        y[0, :2] = 255
        y[2] = 255  # one image entirely ignored
        ignore = 255
    act = torch.relu if activation == "relu" else (lambda e: F.elu(e) + 1)
    v, g = _grad(L.lovasz_hinge, z, y, per_image=per_image, ignore=ignore, activation=activation)
    rv, rg = _grad(_hinge_reference, z, y, per_image=per_image, ignore=ignore, act=act)
    assert torch.allclose(v, rv, atol=1e-10)
    assert torch.allclose(g, rg, atol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "elu+1"])
@pytest.mark.parametrize("with_ignore", [False, True])
def test_lovasz_hinge_float32_matches_float64_reference(activation, with_ignore):
    # float32 CPU tensors take the packed-key NumPy sort (segtutor.ops.sorting), float64 ones
    # torch.sort: both must give the paper's value and gradient
    z, y = _binary_batch(seed=4)
    ignore = None
    if with_ignore:
        y = y.clone()
        y[1, :3] = 255
        ignore = 255
    act = torch.relu if activation == "relu" else (lambda e: F.elu(e) + 1)
    v, g = _grad(L.lovasz_hinge, z.float(), y.float(), ignore=ignore, activation=activation)
    rv, rg = _grad(_hinge_reference, z, y, ignore=ignore, act=act)
    assert v.dtype == g.dtype == torch.float32
    assert torch.allclose(v.double(), rv, atol=1e-5)
    assert torch.allclose(g.double(), rg, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "elu+1"])
def test_lovasz_hinge_float32_with_tied_errors_matches_reference(activation):
    # logits k/4 give long runs of equal errors: the packed-key sort must break ties by pixel
    # index, as the (stable) reference does, or tied pixels swap weights in the gradient
    g = torch.Generator().manual_seed(8)
    z = torch.randint(-8, 9, (4, 9, 9), generator=g).to(DT) / 4
    y = (torch.rand(4, 9, 9, generator=g) < 0.5).to(DT)
    act = torch.relu if activation == "relu" else (lambda e: F.elu(e) + 1)
    for symmetric in (False, True):
        loss = L.symmetric_lovasz_hinge if symmetric else L.lovasz_hinge
        v, g32 = _grad(loss, z.float(), y.float(), activation=activation)
        rv, rg = _grad(_hinge_reference, z, y, act=act)
        if symmetric:
            rv2, rg2 = _grad(lambda x: _hinge_reference(-x, 1 - y, act=act), z)
            rv, rg = (rv + rv2) / 2, (rg + rg2) / 2
        assert torch.allclose(v.double(), rv, atol=1e-6)
        assert torch.allclose(g32.double(), rg, atol=1e-7)


@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_softmax_float32_matches_float64_reference(ignore, per_image):
    # float32 probabilities take the packed-key sort (without ignored pixels its shortcut for
    # errors >= 0), float64 ones torch.sort
    x, t = _multi_batch(seed=9)
    if ignore is not None:
        t[0, :2] = ignore
    probas = x.softmax(1).detach()
    v, g = _grad(L.lovasz_softmax, probas.float(), t, per_image=per_image, ignore=ignore)
    rv, rg = _grad(_softmax_reference, probas, t, per_image=per_image, ignore=ignore)
    assert v.dtype == g.dtype == torch.float32
    assert torch.allclose(v.double(), rv, atol=1e-6)
    assert torch.allclose(g.double(), rg, atol=1e-6)


def test_lovasz_losses_leave_their_inputs_untouched():
    # the batched Lovász code works in place on its own buffers; the caller's float32 tensors
    # (which it reads without copies) must come back unchanged
    z, y = _binary_batch(seed=11)
    z, y = z.detach().float(), y.float()
    y[0, 0, :3] = 255
    x, t = _multi_batch(seed=11)
    p = x.detach().float().softmax(1)
    t[0, 0, :2] = 255
    before = [v.clone() for v in (z, y, p, t)]
    for ignore in (None, 255):
        yy = y if ignore is not None else (y == 1).float()
        for activation in ("relu", "elu+1"):
            L.lovasz_hinge(z.requires_grad_(), yy, ignore=ignore, activation=activation).backward()
            L.symmetric_lovasz_hinge(z, yy, ignore=ignore, activation=activation).backward()
        tt = t if ignore is not None else t.clamp_max(3)
        L.lovasz_softmax(p.requires_grad_(), tt, ignore=ignore, per_image=True).backward()
    for old, new in zip(before, (z, y, p, t)):
        assert torch.equal(old, new.detach())


def test_lovasz_half_precision_keeps_exact_pixel_counts():
    # 4096 pixels an image: float16 stops counting integers exactly after 2048, so the weights
    # must come from float32 counts. Logits k/8 make every hinge error exact in float16.
    g = torch.Generator().manual_seed(6)
    z = torch.randint(-16, 17, (2, 64, 64), generator=g) / 8
    y = torch.rand(2, 64, 64, generator=g) < 0.7
    v16 = L.lovasz_hinge(z.half(), y)
    v32 = L.lovasz_hinge(z.float(), y)
    assert v16.item() == pytest.approx(v32.item(), rel=1e-6)


def test_lovasz_hinge_on_hard_logits_is_twice_jaccard_loss():
    # logits +-1 make every hinge error 0 (right) or 2 (wrong); the Lovász extension is exact
    # on such vertices, so the loss is 2 * (1 - IoU) per image.
    _, y = _binary_batch(seed=2)
    g = torch.Generator().manual_seed(5)
    pred = (torch.rand(y.shape, generator=g) < 0.5).to(DT)
    z = 2 * pred - 1
    iou = M.binary_iou(pred.bool(), y.bool())
    assert L.lovasz_hinge(z, y, per_image=True).item() == pytest.approx(
        float((2 * (1 - iou)).mean())
    )


def test_lovasz_hinge_perfect_empty_and_batch_of_one():
    _, y = _binary_batch(b=1)
    assert L.lovasz_hinge(5 * (2 * y - 1), y).item() == 0.0  # margins beyond 1: no loss
    empty = torch.zeros(1, 6, 7, dtype=DT)
    v, g = _grad(L.lovasz_hinge, torch.full((1, 6, 7), -3.0, dtype=DT), empty)
    assert v.item() == 0.0 and torch.isfinite(g).all()
    v, g = _grad(L.lovasz_hinge, torch.full((1, 6, 7), 0.5, dtype=DT), empty)
    assert v.item() == pytest.approx(1.5)  # relu of the largest error, 1 + 0.5
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("activation", ["relu", "elu+1"])
def test_lovasz_hinge_on_an_empty_mask_pushes_only_the_most_salt_like_pixel(activation):
    # With no positive pixel the Jaccard loss is 1 from the first false positive on, so the
    # Lovász gradient weights are (1, 0, 0, ...): the loss is act(1 + max logit) and only the
    # arg-max pixel gets a gradient. BCE spreads its gradient over every pixel instead, which
    # is why a BCE-trained model tolerates the small specks the TGS metric scores 0
    # (book/tgs/ablation.md).
    z = torch.randn(1, 6, 7, dtype=DT, generator=torch.Generator().manual_seed(7))
    empty = torch.zeros_like(z)
    act = torch.relu if activation == "relu" else (lambda e: F.elu(e) + 1)
    v, g = _grad(L.lovasz_hinge, z, empty, activation=activation)
    assert v.item() == pytest.approx(act(1 + z.max()).item())
    assert (g != 0).sum().item() == 1 and g.flatten().argmax() == z.flatten().argmax()
    _, g_bce = _grad(F.binary_cross_entropy_with_logits, z, empty)
    assert (g_bce > 0).all()
    # the symmetric form's background term pushes down every pixel whose background hinge
    # error is positive (elu+1: every pixel), not only the most salt-like one
    _, g_sym = _grad(L.symmetric_lovasz_hinge, z, empty, activation=activation)
    pushed = (1 + z > 0) if activation == "relu" else torch.ones_like(z, dtype=torch.bool)
    assert torch.equal(g_sym > 0, pushed) and pushed.sum() > 1


def test_symmetric_lovasz_is_mean_of_both_problems():
    z, y = _binary_batch(seed=3)
    ref = 0.5 * (_hinge_reference(z, y) + _hinge_reference(-z, 1 - y))
    v, g = _grad(L.symmetric_lovasz_hinge, z, y)
    _, rg = _grad(lambda x: 0.5 * (_hinge_reference(x, y) + _hinge_reference(-x, 1 - y)), z)
    assert torch.allclose(v, ref) and torch.allclose(g, rg)
    assert torch.allclose(L.LovaszHingeLoss(symmetric=True)(z, y), ref)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [0, 2]])
def test_lovasz_softmax_matches_reference(per_image, classes):
    x, t = _multi_batch(seed=4)
    t[t == 3] = 1  # class 3 absent, so "present" and "all" differ
    t[0, 0] = 255
    t[1] = torch.where(t[1] == 2, 255, t[1])
    probas = x.softmax(1)

    def ours(p):
        return L.lovasz_softmax(p, t, classes=classes, per_image=per_image, ignore=255)

    def ref(p):
        return _softmax_reference(p, t, classes=classes, per_image=per_image, ignore=255)

    v, g = _grad(ours, probas)
    rv, rg = _grad(ref, probas)
    assert torch.allclose(v, rv, atol=1e-10) and torch.allclose(g, rg, atol=1e-10)


def test_lovasz_softmax_on_hard_probas_is_one_minus_miou_of_present_classes():
    _, t = _multi_batch(b=2, c=5, h=8, w=8, seed=6)
    t[t == 4] = 0  # class 4 absent from the truth
    g = torch.Generator().manual_seed(6)
    pred = torch.where(
        torch.rand(t.shape, generator=g) < 0.7, t, torch.randint(0, 5, t.shape, generator=g)
    )
    probas = F.one_hot(pred, 5).permute(0, 3, 1, 2).to(DT)
    iou = M.iou_per_class(M.confusion_matrix(pred, t, 5))
    present = torch.bincount(t.flatten(), minlength=5) > 0
    expected = float((1 - iou[present]).mean())
    assert L.lovasz_softmax(probas, t).item() == pytest.approx(expected)


def test_lovasz_softmax_rejects_logits():
    x, t = _multi_batch()
    with pytest.raises(ValueError, match="probabilities"):
        L.lovasz_softmax(5 * x, t)
    with pytest.raises(ValueError, match="classes"):
        L.lovasz_softmax(x.softmax(1), t, classes="presnt")


def test_erratum_classes_compared_with_is():
    x, t = _multi_batch(seed=4)
    t[t == 3] = 1
    probas = x.softmax(1)
    option = "".join(["pre", "sent"])  # noqa: FLY002  (built at run time: equal, not identical)

    def buggy_selects_present(classes):
        return operator.is_(classes, "present")  # the snippet's `classes is 'present'`

    assert option == "present" and not buggy_selects_present(option)
    # so the buggy code silently averages over *all* classes, absent ones included
    as_buggy = L.lovasz_softmax(probas, t, classes="all")
    assert not torch.allclose(as_buggy, L.lovasz_softmax(probas, t, classes=option))
    assert torch.allclose(
        L.lovasz_softmax(probas, t, classes=option), L.lovasz_softmax(probas, t, classes="present")
    )


# ----------------------------------------------------------------------------- modules, combos


def test_combos_and_modules_equal_functional_forms():
    z, y = _binary_batch()
    assert torch.allclose(
        L.BCEDiceLoss(bce_weight=0.3, dice_weight=2.0)(z, y),
        0.3 * L.bce_loss(z, y) + 2.0 * L.dice_loss(z, y),
    )
    x, t = _multi_batch()
    w = [1.0, 2.0, 1.0, 0.5]
    assert torch.allclose(
        L.CEDiceLoss(weight=w, dice_weight=0.5)(x.float(), t),
        L.cross_entropy_loss(x.float(), t, torch.tensor(w)) + 0.5 * L.dice_loss(x.float(), t),
    )
    assert torch.allclose(L.DiceLoss(squared=True)(z, y), L.dice_loss(z, y, squared=True))
    assert torch.allclose(L.JaccardLoss()(z, y), L.jaccard_loss(z, y))
    assert torch.allclose(L.TverskyLoss(0.3, 0.7)(z, y), L.tversky_loss(z, y, 0.3, 0.7))
    assert torch.allclose(L.BCEWithLogitsLoss(pos_weight=2.0)(z, y), L.bce_loss(z, y, 2.0))
    assert torch.allclose(
        L.LovaszSoftmaxLoss(per_image=True)(x, t),
        L.lovasz_softmax(x.softmax(1), t, per_image=True, ignore=255),
    )
    # class weights are buffers: they follow the module to another dtype/device
    m = L.CEDiceLoss(weight=w).double()
    assert m._opt_weight.dtype == torch.float64


def test_deep_supervision_resizes_target_with_nearest():
    t = torch.zeros(2, 8, 8, dtype=torch.long)
    t[:, :4, :4] = 2
    t[:, 6:, 6:] = 255
    small = L.DeepSupervisionLoss.resize_target(t, (4, 4))
    assert small.dtype == torch.long
    assert set(small.unique().tolist()) <= {0, 2, 255}  # no invented labels
    assert torch.equal(small, t[:, 1::2, 1::2])  # nearest-exact picks the centre-right pixel
    x, _ = _multi_batch(b=2, c=3, h=8, w=8)
    aux = torch.randn(2, 3, 4, 4, dtype=DT)
    loss = L.DeepSupervisionLoss(L.cross_entropy_loss, weights=[1.0, 0.4])
    expected = (L.cross_entropy_loss(x, t) + 0.4 * L.cross_entropy_loss(aux, small)) / 1.4
    assert torch.allclose(loss({"out": x, "aux": aux}, t), expected)
    assert torch.allclose(loss([x, aux], t), expected)
    assert torch.allclose(
        L.DeepSupervisionLoss(L.cross_entropy_loss)(x, t), L.cross_entropy_loss(x, t)
    )
    with pytest.raises(ValueError, match="2 outputs but 3 weights"):
        L.DeepSupervisionLoss(L.cross_entropy_loss, [1, 1, 1])([x, aux], t)
    # binary masks [B, 1, H, W] float
    yb = (t == 2).to(DT)[:, None]
    zb = torch.randn(2, 1, 4, 4, dtype=DT)
    assert torch.allclose(
        L.DeepSupervisionLoss(L.bce_loss)([zb], yb), L.bce_loss(zb, yb[:, :, 1::2, 1::2])
    )


def test_with_auxiliary_weights_each_auxiliary_output_and_matches_binary_logits():
    # hand-written reference: torch's own BCE on the main and on each auxiliary logits, the
    # channel of [B, 1, H, W] dropped to meet the float mask [B, H, W]
    g = torch.Generator().manual_seed(0)
    out, a1, a2 = (torch.randn(2, 1, 5, 6, generator=g, dtype=DT) for _ in range(3))
    y = (torch.rand(2, 5, 6, generator=g) > 0.5).to(DT)
    bce = F.binary_cross_entropy_with_logits
    loss = L.WithAuxiliary(torch.nn.BCEWithLogitsLoss(), aux_weight=0.3)
    expected = bce(out[:, 0], y) + 0.3 * bce(a1[:, 0], y) + 0.3 * bce(a2[:, 0], y)
    assert torch.equal(loss({"out": out, "aux": [a1, a2]}, y), expected)
    # one auxiliary tensor (PSPNet, DeepLab); a tensor output (eval mode) is the main loss alone
    assert torch.equal(loss({"out": out, "aux": a1}, y), bce(out[:, 0], y) + 0.3 * bce(a1[:, 0], y))
    assert torch.equal(loss(out, y), bce(out[:, 0], y))
    # another loss for the auxiliary heads; multi-class logits are passed as they are
    x, t = _multi_batch(b=2, c=3, h=4, w=4)
    mixed = L.WithAuxiliary(L.cross_entropy_loss, 0.5, aux_loss=L.dice_loss)
    assert torch.equal(
        mixed({"out": x, "aux": x * 2}, t), L.cross_entropy_loss(x, t) + 0.5 * L.dice_loss(x * 2, t)
    )
    assert L.WithAuxiliary.handled_outputs == ("out", "aux")
    with pytest.raises(ValueError, match="'out' key"):
        loss({"aux": a1}, y)
    with pytest.raises(ValueError, match="aux_weight"):
        L.WithAuxiliary(L.bce_loss, aux_weight=-1.0)
    with pytest.raises(TypeError, match="loss must be a loss callable"):
        L.WithAuxiliary("bce")


def test_deep_supervision_takes_a_torch_loss_with_binary_logits():
    # torch's BCEWithLogitsLoss wants equal shapes: [B, 1, h, w] logits meet [B, h, w] masks
    g = torch.Generator().manual_seed(1)
    z, aux = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    y = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits
    expected = (bce(z[:, 0], y) + bce(aux[:, 0], y[:, 1::2, 1::2])) / 2
    got = L.DeepSupervisionLoss(torch.nn.BCEWithLogitsLoss())({"out": z, "aux": [aux]}, y)
    assert torch.allclose(got, expected)


# ----------------------------------------------------------------------------- empty batches

# Every loss of the module, function and nn.Module, binary ("b") or multi-class ("m", "p" for
# probabilities), with the options that change how it reduces. test_empty_batch_cases_cover_
# every_loss keeps this list complete.
_EMPTY_BATCH_CASES = [
    ("bce_loss", "b", L.bce_loss),
    ("bce_loss sum", "b", lambda z, y: L.bce_loss(z, y, reduction="sum")),
    ("cross_entropy_loss", "m", L.cross_entropy_loss),
    ("cross_entropy_loss weight", "m", lambda x, t: L.cross_entropy_loss(x, t, [1.0, 2.0, 3.0])),
    ("focal_loss binary", "b", lambda z, y: L.focal_loss(z, y, alpha=0.25)),
    ("focal_loss", "m", lambda x, t: L.focal_loss(x, t, alpha=[1.0, 2.0, 3.0])),
    ("ohem_loss binary", "b", L.ohem_loss),
    ("ohem_loss", "m", L.ohem_loss),
    ("dice_loss binary", "b", L.dice_loss),
    ("dice_loss per_image smooth=0", "b", lambda z, y: L.dice_loss(z, y, 0.0, per_image=True)),
    ("dice_loss", "m", lambda x, t: L.dice_loss(x, t, squared=True)),
    ("jaccard_loss", "m", lambda x, t: L.jaccard_loss(x, t, per_image=True)),
    ("jaccard_loss binary", "b", L.jaccard_loss),
    ("tversky_loss binary", "b", lambda z, y: L.tversky_loss(z, y, 0.3, 0.7, per_image=True)),
    ("tversky_loss", "m", L.tversky_loss),
    ("lovasz_hinge", "b", L.lovasz_hinge),
    ("lovasz_hinge batch elu+1", "b", lambda z, y: L.lovasz_hinge(z, y, False, activation="elu+1")),
    ("lovasz_hinge ignore", "b", lambda z, y: L.lovasz_hinge(z, y, ignore=255)),
    ("symmetric_lovasz_hinge", "b", L.symmetric_lovasz_hinge),
    ("lovasz_softmax", "p", L.lovasz_softmax),
    (
        "lovasz_softmax per_image all",
        "p",
        lambda p, t: L.lovasz_softmax(p, t, classes="all", per_image=True, ignore=255),
    ),
    ("lovasz_softmax classes", "p", lambda p, t: L.lovasz_softmax(p, t, classes=[0, 2])),
    ("bce_dice_loss", "b", L.bce_dice_loss),
    ("ce_dice_loss", "m", L.ce_dice_loss),
    ("BCEWithLogitsLoss", "b", L.BCEWithLogitsLoss(pos_weight=2.0)),
    ("CrossEntropyLoss", "m", L.CrossEntropyLoss(weight=[1.0, 2.0, 3.0])),
    ("FocalLoss", "m", L.FocalLoss()),
    ("FocalLoss binary", "b", L.FocalLoss(alpha=0.25)),
    ("OHEMLoss", "m", L.OHEMLoss(keep=0.5)),
    ("DiceLoss", "m", L.DiceLoss(per_image=True)),
    ("DiceLoss binary", "b", L.DiceLoss()),
    ("JaccardLoss", "b", L.JaccardLoss(per_image=True)),
    ("TverskyLoss", "m", L.TverskyLoss(0.3, 0.7)),
    ("LovaszHingeLoss", "b", L.LovaszHingeLoss()),
    ("LovaszHingeLoss symmetric", "b", L.LovaszHingeLoss(per_image=False, symmetric=True)),
    ("LovaszSoftmaxLoss", "m", L.LovaszSoftmaxLoss(per_image=True)),
    ("BCEDiceLoss", "b", L.BCEDiceLoss()),
    ("CEDiceLoss", "m", L.CEDiceLoss(weight=[1.0, 2.0, 3.0])),
    ("DeepSupervisionLoss", "m", L.DeepSupervisionLoss(L.CEDiceLoss())),
    ("DeepSupervisionLoss binary", "b", L.DeepSupervisionLoss(L.LovaszHingeLoss())),
    ("WithAuxiliary", "m", L.WithAuxiliary(L.CEDiceLoss(), aux_weight=0.4)),
    ("WithAuxiliary binary", "b", L.WithAuxiliary(L.BCEWithLogitsLoss(), aux_weight=0.4)),
]


def _no_pixel_inputs(kind: str, shape: tuple[int, int, int]):
    b, h, w = shape
    if kind == "b":
        return torch.zeros(b, 1, h, w, dtype=DT, requires_grad=True), torch.zeros(b, 1, h, w)
    logits = torch.zeros(b, 3, h, w, dtype=DT, requires_grad=True)
    return logits, torch.zeros(b, h, w, dtype=torch.long)


@pytest.mark.parametrize("shape", [(0, 5, 6), (2, 0, 6)], ids=["B=0", "H=0"])
@pytest.mark.parametrize(
    "name, kind, loss", _EMPTY_BATCH_CASES, ids=[c[0] for c in _EMPTY_BATCH_CASES]
)
def test_every_loss_of_a_batch_without_pixels_is_zero_with_a_gradient(name, kind, loss, shape):
    logits, target = _no_pixel_inputs(kind, shape)
    x = logits.softmax(1) if kind == "p" else logits
    if name.startswith("DeepSupervisionLoss"):  # with a half-size auxiliary output too
        x = {"out": x, "aux": x[..., ::2, ::2]}
    if name.startswith("WithAuxiliary"):  # auxiliary outputs at the input size
        x = {"out": x, "aux": [x * 2, x]}
    value = loss(x, target)
    assert value.shape == () and value.item() == 0.0, name  # not NaN, not 1
    (grad,) = torch.autograd.grad(value, logits)  # still on the graph: backward() runs
    assert grad.shape == logits.shape


def test_empty_batch_cases_cover_every_loss():
    covered = {name.split()[0] for name, _, _ in _EMPTY_BATCH_CASES}
    losses = set(L.__all__) - {"lovasz_grad", "overlap_stats", "output_criterion"}  # helpers
    assert losses <= covered, sorted(losses - covered)


def test_empty_batch_reduction_none_gives_the_empty_map_and_inputs_are_still_checked():
    z, y = _no_pixel_inputs("b", (0, 5, 6))
    x, t = _no_pixel_inputs("m", (0, 5, 6))
    assert L.bce_loss(z, y, reduction="none").shape == (0, 5, 6)
    assert L.cross_entropy_loss(x, t, reduction="none").shape == (0, 5, 6)
    assert L.focal_loss(x, t, reduction="none").shape == (0, 5, 6)
    # an empty batch is no excuse for wrong shapes, dtypes or options
    with pytest.raises(ValueError, match="target must"):
        L.lovasz_hinge(z, y[..., :4])
    with pytest.raises(TypeError, match="long"):
        L.dice_loss(x, t.double())
    with pytest.raises(ValueError, match="classes"):
        L.lovasz_softmax(x.softmax(1), t, classes=[5])
    with pytest.raises(ValueError, match="smooth"):
        L.dice_loss(z, y, smooth=-1.0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "fn,logits,target,exc,match",
    [
        (L.bce_loss, torch.zeros(2, 4, 4), torch.zeros(2, 4, 5), ValueError, "target must match"),
        (L.bce_loss, torch.zeros(2, 4, 4), torch.full((2, 4, 4), 0.5), ValueError, r"\{0, 1\}"),
        (L.bce_loss, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), ValueError, "one channel"),
        (
            L.cross_entropy_loss,
            torch.zeros(2, 3, 4, 4),
            torch.full((2, 4, 4), 3),
            ValueError,
            "label 3",
        ),
        (L.cross_entropy_loss, torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), TypeError, "long"),
        (
            L.dice_loss,
            torch.zeros(2, 3, 4, 4),
            torch.zeros(2, 5, 5, dtype=torch.long),
            ValueError,
            r"\[B, H, W\]",
        ),
        (L.focal_loss, torch.zeros(4, 4), torch.zeros(4, 4), ValueError, "logits must be"),
        (
            L.lovasz_hinge,
            torch.zeros(2, 4, 4, dtype=torch.long),
            torch.zeros(2, 4, 4),
            TypeError,
            "floating",
        ),
    ],
)
def test_bad_input_raises_clear_errors(fn, logits, target, exc, match):
    with pytest.raises(exc, match=match):
        fn(logits, target)


def test_bad_options():
    z, y = _binary_batch()
    with pytest.raises(ValueError, match="activation"):
        L.lovasz_hinge(z, y, activation="gelu")
    with pytest.raises(ValueError, match="alpha"):
        L.focal_loss(z, y, alpha=[0.2, 0.8])
    with pytest.raises(ValueError, match="keep"):
        L.OHEMLoss(keep=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        L.dice_loss(z, y.tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_on_cuda_match_cpu():
    z, y = _binary_batch()
    x, t = _multi_batch()
    for fn, a, b in ((L.lovasz_hinge, z, y), (L.dice_loss, x, t), (L.focal_loss, x, t)):
        cpu = fn(a.detach(), b)
        gpu = fn(a.detach().cuda(), b.cuda())
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-8)
