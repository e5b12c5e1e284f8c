"""Errata of the Architectures chapters (U-Net++, DeepLab, PSPNet, comparison).

Each test writes the widely copied buggy snippet and shows that it gives a different, wrong
answer (or none at all) next to the version the book uses:

- a PSPNet pyramid-pooling head defined with ``__init__`` but no ``forward``;
- the deprecated ``F.upsample`` / ``F.upsample_bilinear`` calls of old DeepLab/PSPNet code, which
  look interchangeable but sample on different grids;
- the image-level pooling branches (ASPP's image pooling, PPM's 1x1 bin) fed one image per batch
  in training mode.

References are independent of the code under test: PyTorch's own ops and hand-worked values.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segtutor.models import ASPP, MODEL_NAMES, PPM, build_model

# --------------------------------------------------------------------------- PPM without forward


class BuggyPPM(nn.Module):
    """The snippet: the pooling branches are built, but the class never defines ``forward``."""

    def __init__(self, in_channels: int, bins=(1, 2, 3, 6)) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, in_channels // 4, 1, bias=False),
                nn.BatchNorm2d(in_channels // 4),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )


def _ppm_reference(ppm: PPM, x: torch.Tensor, bins=(1, 2, 3, 6)) -> torch.Tensor:
    """PSPNet's pyramid pooling written with functional ops (Zhao et al., CVPR 2017, Fig. 3):
    average-pool to b x b, 1x1 conv, BN (eval statistics), ReLU, bilinear upsample, concat."""
    out = [x]
    for b, stage in zip(bins, ppm.stages):
        conv, bn = stage[1][0], stage[1][1]
        y = F.adaptive_avg_pool2d(x, b)
        y = F.conv2d(y, conv.weight)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        y = F.relu(y)
        out.append(F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return torch.cat(out, dim=1)


def test_erratum_ppm_head_without_forward_cannot_run() -> None:
    x = torch.randn(2, 8, 12, 12)
    buggy = BuggyPPM(8).eval()
    with pytest.raises(NotImplementedError, match="forward"):
        buggy(x)  # nn.Module's placeholder forward raises

    ppm = PPM(8).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for stage in ppm.stages:
            stage[1][1].running_mean.uniform_(-0.5, 0.5)
            stage[1][1].running_var.uniform_(0.5, 2.0)
        out = ppm(x)
        ref = _ppm_reference(ppm, x)
    assert out.shape == (2, 8 + 4 * 2, 12, 12)
    torch.testing.assert_close(out, ref)


def test_ppm_bins_pool_the_papers_regions() -> None:
    """Bin b averages a (H/b) x (W/b) block; checked against a reshape-mean for 12 x 12 input."""
    x = torch.randn(1, 4, 12, 12)
    for b in (1, 2, 3, 6):
        block = x.reshape(1, 4, b, 12 // b, b, 12 // b).mean(dim=(3, 5))
        torch.testing.assert_close(nn.AdaptiveAvgPool2d(b)(x), block)
    # bin 1 is global context: after upsampling, the branch is constant over the image
    ppm = PPM(4).eval()
    with torch.no_grad():
        global_branch = ppm(x)[:, 4:5]
    assert torch.allclose(global_branch, global_branch[..., :1, :1].expand_as(global_branch))


# --------------------------------------------------------------------------- deprecated upsample


def test_erratum_deprecated_upsample_calls_disagree() -> None:
    """``F.upsample(x, mode="bilinear")`` and ``F.upsample_bilinear(x)`` are both deprecated,
    and they do not even agree: the second aligns corners. A ramp [0, 1] upsampled to 4 samples
    gives [0, 1/3, 2/3, 1] with aligned corners and [0, 1/4, 3/4, 1] with half-pixel centres."""
    x = torch.tensor([[[[0.0, 1.0]]]])  # [1, 1, 1, 2]
    with pytest.warns(UserWarning, match="deprecated"):
        old_upsample = F.upsample(x, size=(1, 4), mode="bilinear")
    with pytest.warns(UserWarning, match="deprecated"):
        old_bilinear = F.upsample_bilinear(x, size=(1, 4))
    half_pixel = torch.tensor([0.0, 0.25, 0.75, 1.0])
    corners = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    torch.testing.assert_close(old_upsample.flatten(), half_pixel)
    torch.testing.assert_close(old_bilinear.flatten(), corners)
    assert not torch.allclose(old_upsample, old_bilinear)
    # what the book writes instead: the same numbers, with the choice spelled out
    new = F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(new.flatten(), half_pixel)


@pytest.mark.parametrize(
    "name,options",
    [
        ("unetpp", {"base_width": 4, "deep_supervision": True}),
        ("deeplabv3", {"backbone": "resnet18", "head_width": 16, "aux": True}),
        ("deeplabv3plus", {"backbone": "resnet18", "head_width": 16}),
        ("pspnet", {"backbone": "resnet18", "head_width": 16, "aux": True}),
    ],
)
def test_models_use_no_deprecated_calls(name, options) -> None:
    """Forward and backward in both modes with every warning turned into an error."""
    if name not in MODEL_NAMES:
        pytest.skip(f"{name} is not registered in segtutor.models yet")
    model = build_model(name, num_classes=3, **options)
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.train()(x)
        main = out["out"] if isinstance(out, dict) else out
        main.mean().backward()
        with torch.no_grad():
            assert model.eval()(x).shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- one image per batch


@pytest.mark.parametrize(
    "make", [lambda: PPM(8), lambda: ASPP(8, 8, rates=(1, 2))], ids=["ppm", "aspp"]
)
def test_image_pooling_needs_two_images_per_batch_in_training(make) -> None:
    """The global branch reduces each image to 1 x 1, so its BN sees one value per channel when
    the batch holds one image: PyTorch refuses to normalise it in training mode (hence
    ``drop_last=True`` when the last batch could hold a single image). Eval mode is fine."""
    block = make()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block.train()(torch.randn(1, 8, 12, 12))
    assert block.train()(torch.randn(2, 8, 12, 12)).shape[0] == 2
    with torch.no_grad():
        assert block.eval()(torch.randn(1, 8, 12, 12)).shape[0] == 1
