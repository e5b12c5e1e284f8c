"""segtutor.ops against PyTorch's own operators, hand-worked values and the papers' formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segtutor import ops

# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "in_hw, out_hw",
    [
        ((5, 7), (10, 14)),  # x2 up
        ((3, 6), (6, 12)),  # the chapter's worked example
        ((8, 9), (3, 4)),  # down
        ((7, 5), (13, 11)),  # odd, non-integer ratio
        ((6, 6), (6, 6)),  # identity
        ((4, 9), (1, 1)),  # to one pixel
        ((1, 1), (5, 3)),  # from one pixel
        ((9, 4), (4, 17)),  # down in y, up in x
    ],
)
def test_bilinear_matches_f_interpolate(in_hw, out_hw, align_corners):
    g = torch.Generator().manual_seed(sum(in_hw) * 31 + sum(out_hw))
    x = torch.randn(2, 3, *in_hw, generator=g)
    ours = ops.bilinear_interpolate(x, out_hw, align_corners=align_corners)
    ref = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=align_corners)
    assert ours.shape == ref.shape == (2, 3, *out_hw)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_bilinear_random_shapes():
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        n, c, h, w, oh, ow = (int(v) for v in torch.randint(1, 12, (6,), generator=g))
        ac = bool(torch.randint(2, (1,), generator=g))
        x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
        torch.testing.assert_close(
            ops.bilinear_interpolate(x, (oh, ow), align_corners=ac),
            F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=ac),
            atol=1e-5,
            rtol=0,
        )


def test_bilinear_hand_worked_values():
    # 2x2 -> 3x3 with align_corners=True: the centre is the mean of the four corners,
    # edge midpoints the mean of their two ends (the four-neighbour formula by hand).
    x = torch.tensor([[[[0.0, 2.0], [4.0, 10.0]]]])
    out = ops.bilinear_interpolate(x, 3, align_corners=True)[0, 0]
    expected = torch.tensor([[0.0, 1.0, 2.0], [2.0, 4.0, 6.0], [4.0, 7.0, 10.0]])
    torch.testing.assert_close(out, expected)


def test_bilinear_is_x_then_y_linear():
    x = torch.randn(1, 2, 4, 5)
    rows = ops.linear_interpolate_1d(x, 9, dim=3)
    torch.testing.assert_close(
        ops.linear_interpolate_1d(rows, 7, dim=2), ops.bilinear_interpolate(x, (7, 9))
    )
    # and the order does not matter: the weights are products
    cols = ops.linear_interpolate_1d(x, 7, dim=2)
    torch.testing.assert_close(
        ops.linear_interpolate_1d(cols, 9, dim=3),
        ops.bilinear_interpolate(x, (7, 9)),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_1d_matches_f_interpolate(align_corners):
    x = torch.randn(2, 3, 6)
    for size in (1, 4, 6, 11, 13):
        torch.testing.assert_close(
            ops.linear_interpolate_1d(x, size, align_corners),
            F.interpolate(x, size=size, mode="linear", align_corners=align_corners),
            atol=1e-5,
            rtol=0,
        )


def test_linear_1d_keeps_samples_at_integer_positions():
    y = torch.tensor([1.0, 3.0, -2.0, 5.0])
    up = ops.linear_interpolate_1d(y, 7, align_corners=True)  # positions 0, 0.5, 1, ...
    torch.testing.assert_close(up, torch.tensor([1.0, 2.0, 3.0, 0.5, -2.0, 1.5, 5.0]))


def test_source_coordinates_definition():
    torch.testing.assert_close(
        ops.source_coordinates(3, 6, align_corners=False, clamp=False),
        torch.tensor([-0.25, 0.25, 0.75, 1.25, 1.75, 2.25], dtype=torch.float64),
    )
    torch.testing.assert_close(
        ops.source_coordinates(3, 6, align_corners=True),
        torch.tensor([0.0, 0.4, 0.8, 1.2, 1.6, 2.0], dtype=torch.float64),
    )


def test_modern_interpolate_replaces_deprecated_upsample():
    """Erratum: F.upsample / F.upsample_bilinear are deprecated; F.interpolate is the current call.

    F.upsample_bilinear always used align_corners=True, while F.interpolate defaults to False:
    porting old code by renaming the call changes the result. Our function reproduces both.
    """
    x = torch.randn(1, 2, 5, 6)
    modern = F.interpolate(x, size=(10, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ops.bilinear_interpolate(x, (10, 12)), modern, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning):
        old = F.upsample_bilinear(x, size=(10, 12))  # the deprecated call of widely copied code
    torch.testing.assert_close(
        ops.bilinear_interpolate(x, (10, 12), align_corners=True), old, atol=1e-5, rtol=0
    )
    assert (old - modern).abs().max() > 1e-2, "the old call's align_corners=True gives other values"


def test_interpolation_bad_input():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ops.bilinear_interpolate(torch.zeros(3, 4, 5), 8)
    with pytest.raises(ValueError, match="size"):
        ops.bilinear_interpolate(torch.zeros(1, 1, 4, 5), (0, 3))
    with pytest.raises(ValueError, match="size"):
        ops.bilinear_interpolate(torch.zeros(1, 1, 4, 5), (2, 3, 4))
    with pytest.raises(TypeError, match="floating"):
        ops.linear_interpolate_1d(torch.zeros(4, dtype=torch.long), 8)
    with pytest.raises(TypeError, match="size"):
        ops.linear_interpolate_1d(torch.zeros(4), 2.5)


# ------------------------------------------------------------------------ convolution as a matrix


def test_conv_matrix_4x4_input_3x3_kernel_by_hand():
    # Dumoulin & Visin's example: 4x4 input, 3x3 kernel, no padding, stride 1 -> 2x2 output,
    # C is 4x16
    k = torch.arange(1.0, 10.0).view(3, 3)
    C = ops.conv2d_matrix(k, 4)
    assert C.shape == (4, 16)
    first = torch.tensor([1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0, 0], dtype=torch.float32)
    torch.testing.assert_close(C[0], first)
    torch.testing.assert_close(C[3], torch.roll(first, 5))  # output (1, 1): one row + one column on
    assert (C != 0).sum(dim=1).tolist() == [9, 9, 9, 9]


SETTINGS = list(
    itertools.product(
        [(5, 5), (6, 7), (9, 4)], [(3, 3), (2, 3), (1, 1)], [1, 2, 3], [0, 1, 2], [1, 2]
    )
)


@pytest.mark.parametrize("input_size, ksize, stride, padding, dilation", SETTINGS)
def test_conv_matrix_matches_conv2d_and_transpose(input_size, ksize, stride, padding, dilation):
    H, W = input_size
    span = [dilation * (k - 1) + 1 for k in ksize]
    if span[0] > H + 2 * padding or span[1] > W + 2 * padding:
        with pytest.raises(ValueError, match="kernel"):
            ops.conv2d_matrix(torch.ones(ksize), input_size, stride, padding, dilation)
        return
    g = torch.Generator().manual_seed(H * 100 + W * 10 + stride + padding + dilation)
    k = torch.randn(ksize, generator=g, dtype=torch.float64)
    x = torch.randn(H, W, generator=g, dtype=torch.float64)
    C = ops.conv2d_matrix(k, input_size, stride, padding, dilation)
    y = F.conv2d(x[None, None], k[None, None], stride=stride, padding=padding, dilation=dilation)
    assert C.shape == (y.numel(), H * W)
    torch.testing.assert_close(C @ x.flatten(), y.flatten())
    yy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    op = (
        ops.output_padding_for(H, ksize[0], stride, padding, dilation),
        ops.output_padding_for(W, ksize[1], stride, padding, dilation),
    )
    t = F.conv_transpose2d(
        yy, k[None, None], stride=stride, padding=padding, dilation=dilation, output_padding=op
    )
    assert t.shape[-2:] == (H, W)
    torch.testing.assert_close(C.T @ yy.flatten(), t.flatten())


def test_conv_matrix_accepts_weight_and_tuples():
    w = torch.randn(1, 1, 3, 2)
    x = torch.randn(1, 1, 8, 6)
    C = ops.conv2d_matrix(w, (8, 6), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    y = F.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    torch.testing.assert_close(C @ x.flatten(), y.flatten(), atol=1e-5, rtol=0)


def test_conv_matrix_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        ops.conv2d_matrix(torch.ones(5, 5), 4)  # larger than the input
    with pytest.raises(ValueError, match="kernel"):
        ops.conv2d_matrix(torch.ones(3, 3), 4, dilation=2)  # dilated span 5 > 4
    ops.conv2d_matrix(torch.ones(5, 5), 4, padding=1)  # fits once padded
    with pytest.raises(ValueError, match="kernel"):
        ops.conv2d_matrix(torch.ones(2, 3, 3), 4)
    with pytest.raises(TypeError, match="kernel"):
        ops.conv2d_matrix(torch.ones(3, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="stride"):
        ops.conv2d_matrix(torch.ones(3, 3), 4, stride=0)
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d_matrix(torch.ones(3, 3), 4, padding=-1)
    with pytest.raises(ValueError, match="input_size"):
        ops.conv2d_matrix(torch.ones(3, 3), (4, 4, 4))


@pytest.mark.parametrize(
    "n, k, s, p, d",
    [
        (7, 3, 2, 1, 1),
        (8, 3, 2, 1, 1),
        (32, 4, 2, 1, 1),
        (10, 3, 1, 2, 2),
        (15, 5, 3, 0, 1),
        (4, 3, 1, 0, 1),
    ],
)
def test_output_size_formulas_match_modules(n, k, s, p, d):
    x = torch.zeros(1, 1, n, n)
    conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
    m = conv(x).shape[-1]
    assert ops.conv_output_size(n, k, s, p, d) == m
    op = ops.output_padding_for(n, k, s, p, d)
    up = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, dilation=d, output_padding=op)
    assert up(torch.zeros(1, 1, m, m)).shape[-1] == n
    assert ops.conv_transpose_output_size(m, k, s, p, op, d) == n
    with pytest.raises(ValueError, match="output_padding"):
        ops.conv_transpose_output_size(m, k, s, p, max(s, d), d)


@pytest.mark.slow
def test_output_padding_for_against_pytorch_on_a_grid():
    """Tiny inputs and heavy padding included: wherever F.conv2d accepts the settings, the
    transposed convolution with output_padding_for(...) gives back exactly n; where it rejects
    them, so does output_padding_for."""
    checked = 0
    for n, k, s, p, d in itertools.product(
        range(1, 10), range(1, 5), range(1, 4), range(4), range(1, 4)
    ):
        w = torch.ones(1, 1, k, k)
        try:
            y = F.conv2d(torch.zeros(1, 1, n, n), w, stride=s, padding=p, dilation=d)
        except RuntimeError:
            with pytest.raises(ValueError, match="kernel"):
                ops.output_padding_for(n, k, s, p, d)
            continue
        op = ops.output_padding_for(n, k, s, p, d)
        assert 0 <= op < max(s, d), (n, k, s, p, d, op)
        back = F.conv_transpose2d(y, w, stride=s, padding=p, output_padding=op, dilation=d)
        assert back.shape[-2:] == (n, n), (n, k, s, p, d, op)
        checked += 1
    assert checked > 1000  # most of the 1,296 settings are valid convolutions


def test_output_padding_for_one_pixel_kernel_2_stride_2_padding_1():
    # the transpose without output_padding has size (1 - 1) 2 - 2 + 1 + 1 = 0; with 1 it is 1
    assert ops.conv_output_size(1, 2, 2, 1) == 1
    assert ops.output_padding_for(1, 2, 2, 1) == 1
    y = F.conv_transpose2d(
        torch.ones(1, 1, 1, 1), torch.ones(1, 1, 2, 2), stride=2, padding=1, output_padding=1
    )
    assert y.shape[-2:] == (1, 1)


# --------------------------------------------------------------------------- receptive fields


def test_effective_kernel_size():
    assert [ops.effective_kernel_size(3, a) for a in (1, 2, 4, 8)] == [3, 5, 9, 17]
    assert ops.effective_kernel_size(5, 3) == 13
    with pytest.raises(ValueError, match="dilation"):
        ops.effective_kernel_size(3, 0)


def test_receptive_field_known_stacks():
    assert ops.receptive_field([(3, 1, 1)] * 3) == 7
    assert ops.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)]) == 15
    assert ops.receptive_field([]) == 1
    # Yu & Koltun's context module: dilations 1, 1, 2, 4, 8, 16, 1 -> 67 (their table 1)
    assert ops.receptive_field([(3, 1, a) for a in (1, 1, 2, 4, 8, 16, 1)]) == 67
    # VGG16's conv5_3 (13 convs, 4 poolings): 196 pixels
    vgg = (
        ([(3, 1, 1)] * 2 + [(2, 2, 1)]) * 2 + ([(3, 1, 1)] * 3 + [(2, 2, 1)]) * 2 + [(3, 1, 1)] * 3
    )
    assert ops.receptive_field(vgg) == 196
    assert ops.receptive_field_growth([(3, 2, 1), (3, 2, 1)]) == [(3, 2), (7, 4)]


def test_receptive_field_bad_input():
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        ops.receptive_field([(3, 1, 1), (3, 1)])
    with pytest.raises(ValueError, match="stride"):
        ops.receptive_field([(3, 0, 1)])
    with pytest.raises(TypeError, match="layers"):
        ops.receptive_field("3,1,1")


def _stack(layers):
    """Convs with ReLUs in between (not after the last: a dead output unit has no gradient)."""
    modules: list[nn.Module] = []
    for k, s, a in layers:
        modules += [nn.Conv2d(2, 2, k, stride=s, dilation=a, padding=a * (k - 1) // 2), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


@pytest.mark.parametrize(
    "layers",
    [
        [(3, 1, 1)] * 3,
        [(3, 1, 1), (3, 1, 2), (3, 1, 4)],
        [(3, 2, 1), (3, 2, 1), (3, 1, 1)],
        [(5, 1, 1), (3, 2, 2)],
        [(3, 1, 2)] * 3,  # gridding: holes inside, but the extent is still 13
    ],
)
def test_receptive_field_of_matches_analytic(layers):
    torch.manual_seed(1)
    model = _stack(layers)
    size = 2 * ops.receptive_field(layers) + 9
    measured = ops.receptive_field_of(model, size, generator=torch.Generator().manual_seed(0))
    assert measured == (ops.receptive_field(layers),) * 2


def test_receptive_field_of_needs_large_enough_input_and_restores_mode():
    model = _stack([(3, 1, 1)] * 4).train()
    with pytest.raises(ValueError, match="too small"):
        ops.receptive_field_of(model, 7)
    assert model.training
    assert ops.receptive_field_of(model, 21) == (9, 9)


def test_gridding_leaves_holes_in_the_gradient():
    # three 3x3 convs with dilation 2 only ever touch even offsets from the centre
    model = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=2, padding=2) for _ in range(3)])
    grad = ops.input_gradient(model, 21)
    assert grad[10, 10] > 0 and grad[10, 4] > 0
    assert grad[10, 11] == 0 and grad[9, 10] == 0


# --------------------------------------------------------------------------- upsamplers


def test_upsamplers_shapes_and_flat_response():
    torch.manual_seed(0)
    flat = torch.full((1, 1, 8, 8), 0.5)
    for kind in ("transposed", "resize"):
        m = ops.make_upsampler(kind, stages=2, width=4)
        assert m(torch.zeros(2, 1, 5, 7)).shape == (2, 1, 20, 28)
    torch.manual_seed(0)
    t = ops.make_upsampler("transposed", stages=2, width=4)(flat)[0, 0].detach()
    torch.manual_seed(0)
    r = ops.make_upsampler("resize", stages=2, width=4)(flat)[0, 0].detach()
    # away from the zero-padded border a resize-conv maps a constant image to a constant
    # (zero padding disturbs 8 output pixels at each border: 1 low-res pixel x 4, plus 1 + 2 + 1)
    inner = r[8:-8, 8:-8]
    assert (inner - inner.mean()).abs().max() < 1e-6
    assert ops.phase_pattern(r, 4, margin=8).abs().max() < 1e-6
    # the stride-2, kernel-3 transposed conv does not: a periodic (period 4) pattern remains
    assert ops.phase_pattern(t, 4, margin=8).abs().max() > 1e-4
    with pytest.raises(ValueError, match="kind"):
        ops.make_upsampler("pixelshuffle")


def test_phase_pattern_hand_checked():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).repeat(3, 3)  # 6x6 checkerboard corner
    torch.testing.assert_close(
        ops.phase_pattern(x, 2), torch.tensor([[0.75, -0.25], [-0.25, -0.25]])
    )
    torch.testing.assert_close(
        ops.phase_pattern(x, 2, margin=1), torch.tensor([[0.75, -0.25], [-0.25, -0.25]])
    )
    assert ops.phase_pattern(torch.ones(8, 8), 4).abs().max() == 0


def test_train_upsampler_reduces_loss():
    torch.manual_seed(0)
    high = torch.rand(8, 1, 8, 8)
    low = F.avg_pool2d(high, 2)
    model = ops.make_upsampler("resize", stages=1, width=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small: thread hand-offs would dominate the run time
    try:
        losses = ops.train_upsampler(
            model,
            low,
            high,
            steps=30,
            lr=1e-2,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 30 and sum(losses[-5:]) < 0.5 * sum(losses[:5])


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ops_on_cuda_match_pytorch():
    dev = torch.device("cuda")
    x = torch.randn(2, 3, 7, 9, device=dev)
    for ac in (False, True):
        ours = ops.bilinear_interpolate(x, (15, 4), align_corners=ac)
        assert ours.device.type == "cuda"
        torch.testing.assert_close(
            ours,
            F.interpolate(x, size=(15, 4), mode="bilinear", align_corners=ac),
            atol=1e-5,
            rtol=0,
        )
    k = torch.randn(3, 3, device=dev, dtype=torch.float64)
    img = torch.randn(9, 8, device=dev, dtype=torch.float64)
    C = ops.conv2d_matrix(k, (9, 8), stride=2, padding=1, dilation=2)
    y = F.conv2d(img[None, None], k[None, None], stride=2, padding=1, dilation=2)
    torch.testing.assert_close(C @ img.flatten(), y.flatten())
    model = _stack([(3, 1, 1), (3, 1, 2)]).to(dev)
    assert ops.receptive_field_of(model, 21) == (7, 7)


# --------------------------------------------------------------------------- sorting


def _awkward_rows() -> torch.Tensor:
    """Random rows plus the cases a bit-pattern sort can get wrong: ties, both zeros, infinities,
    subnormals, negative numbers of every magnitude."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 500, generator=g) * torch.logspace(-3, 3, 500)
    x[0, ::7] = 0.5  # many ties
    x[1, ::3], x[1, 1::3] = -0.0, 0.0
    x[2, :20], x[2, 20:40] = float("-inf"), float("inf")
    x[3, ::2] = -1e-40  # subnormal
    x[4] = -x[4].abs()
    x[5] = x[5].round()  # integers: long runs of ties
    return x


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_argsort_rows_equals_torch_stable_sort(descending: bool, dtype: torch.dtype) -> None:
    from segtutor.ops.sorting import argsort_rows

    x = _awkward_rows().to(dtype)
    expected = torch.sort(x, dim=-1, descending=descending, stable=True).indices
    assert torch.equal(argsort_rows(x, descending=descending), expected)


def test_argsort_rows_non_contiguous_and_other_dtypes() -> None:
    from segtutor.ops.sorting import argsort_rows

    x = _awkward_rows()
    assert torch.equal(argsort_rows(x.t().contiguous().t()), torch.sort(x, stable=True).indices)
    assert torch.equal(argsort_rows(x[:, ::2]), torch.sort(x[:, ::2], stable=True).indices)
    ints = torch.randint(0, 5, (3, 50))  # no bit trick for integers: torch.sort's result
    assert torch.equal(argsort_rows(ints), torch.sort(ints, stable=True).indices)


@pytest.mark.parametrize("descending", [False, True])
def test_argsort_rows_nonnegative_shortcut(descending: bool) -> None:
    from segtutor.ops.sorting import argsort_rows

    x = _awkward_rows().abs()  # ties, +0.0 (abs never gives -0.0), +inf, subnormals
    expected = torch.sort(x, dim=-1, descending=descending, stable=True).indices
    assert torch.equal(argsort_rows(x, descending=descending, nonnegative=True), expected)
    # a promise broken by negative values: they sort below every non-negative value
    y = torch.tensor([[2.0, -1.0, 0.0, float("-inf"), 3.0]])
    perm = argsort_rows(y, descending=True, nonnegative=True)
    assert perm[0, :3].tolist() == [4, 0, 2] and set(perm[0, 3:].tolist()) == {1, 3}


def test_argsort_rows_rejects_bad_input() -> None:
    from segtutor.ops.sorting import argsort_rows

    with pytest.raises(TypeError, match="values"):
        argsort_rows([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[R, N\]"):
        argsort_rows(torch.zeros(2, 3, 4))
