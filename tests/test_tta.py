"""Flip test-time augmentation: the inverse transform is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segtutor.train.tta import hflip_tta, tta_predict


class _Ramp(nn.Module):
    """f(x) = x + column index: NOT flip-equivariant, with a hand-computable TTA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        return x + torch.arange(w, dtype=x.dtype).view(1, 1, 1, w)


def _symmetric_conv_net() -> nn.Module:
    """A small CNN whose kernels are mirror-symmetric left-right, hence flip-equivariant."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 1, 5, padding=2),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return net.eval()


def test_pointwise_model_tta_is_bit_identical_to_plain_output():
    # A 1x1 convolution is exactly flip-equivariant, with no reordering of float sums.
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Tanh()).eval()
    x = torch.randn(2, 2, 9, 13)
    plain = torch.sigmoid(net(x))
    assert torch.equal(hflip_tta(net, x), plain)
    # with four copies the running sum a+a+a may round in the last bit, hence a tolerance
    four = tta_predict(net, x, ("identity", "hflip", "vflip", "hvflip"))
    torch.testing.assert_close(four, plain, rtol=0, atol=1e-7)


def test_flip_equivariant_cnn_gives_same_output_with_and_without_tta():
    net = _symmetric_conv_net()
    x = torch.randn(3, 1, 16, 21)
    # the premise: the net really is equivariant
    torch.testing.assert_close(net(x.flip(-1)), net(x).flip(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(hflip_tta(net, x), torch.sigmoid(net(x)), rtol=0, atol=1e-6)
    torch.testing.assert_close(hflip_tta(net, x, activation=None), net(x), rtol=0, atol=1e-6)


def test_non_equivariant_model_matches_hand_computed_average():
    # f(x) = x + j; f(flip x) flipped back = x + (W-1-j); their mean is x + (W-1)/2 everywhere.
    x = torch.randn(2, 1, 5, 7)
    out = hflip_tta(_Ramp(), x, activation=None)
    torch.testing.assert_close(out, x + 3.0)
    # and it is not the plain output: the TTA really ran the flipped copy
    assert not torch.allclose(out, _Ramp()(x))


def test_single_flip_is_mapped_back_to_the_original_frame():
    x = torch.randn(1, 1, 4, 6)
    out = tta_predict(_Ramp(), x, ("hflip",), activation=None)
    expected = x + torch.arange(5, -1, -1, dtype=x.dtype)  # x + (W-1-j)
    torch.testing.assert_close(out, expected)
    vout = tta_predict(_Ramp(), x, ("vflip",), activation=None)
    torch.testing.assert_close(vout, _Ramp()(x))  # the ramp does not change along height


def test_dict_outputs_flip_spatial_and_average_image_level():
    class Head(nn.Module):
        def forward(self, x):
            return {"out": _Ramp()(x), "cls": x[:, :, :, :2].mean(dim=(2, 3))}  # [N,1]: left edge

    x = torch.randn(2, 1, 3, 4)
    out = hflip_tta(Head(), x, activation=None)
    torch.testing.assert_close(out["out"], x + 1.5)
    left, right = x[..., :2].mean(dim=(2, 3)), x.flip(-1)[..., :2].mean(dim=(2, 3))
    torch.testing.assert_close(out["cls"], (left + right) / 2)
    assert out["cls"].shape == (2, 1)


def test_bad_input_is_reported():
    net = nn.Identity()
    with pytest.raises(ValueError, match="images"):
        hflip_tta(net, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="unknown"):
        tta_predict(net, torch.zeros(1, 1, 4, 4), ("rot90",))
    with pytest.raises(TypeError, match="transforms"):
        tta_predict(net, torch.zeros(1, 1, 4, 4), "hflip")
