"""DeepLab v3 (Chen et al., arXiv 2017) and v3+ (Chen et al., ECCV 2018) on ResNet encoders."""

from __future__ import annotations

import torch
from torch import nn

from segtutor import checks

from .blocks import (
    ASPP,
    ConvBNReLU,
    DilatedResNetModel,
    SegHead,
    aux_head,
    aux_head_output,
    logits_to_input,
    pad_to_multiple,
    resize_to,
)


class DeepLabV3(DilatedResNetModel):
    """DeepLab v3: a ResNet whose last stride(s) became dilation (output stride 16 or 8), ASPP
    on its last map, a 3x3 conv-BN-ReLU and a 1x1 classifier (together ``segmentation_head``),
    logits upsampled bilinearly.

    With ``decoder=True`` it is DeepLab v3+: the ASPP output is upsampled 4x, concatenated with
    the encoder's stride-4 features (``layer1``) reduced to ``low_level_width`` channels by a 1x1
    conv, refined by two 3x3 conv-BN-ReLU, classified and upsampled 4x.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits (padded inside to a multiple of
    the output stride, cropped back). In training with ``aux=True``: ``{"out", "aux"}``, where
    ``aux`` comes from a small head on ``layer3`` (as torchvision's ``aux_loss``).

    Args:
        backbone: ``resnet18``, ``resnet34`` or ``resnet50`` (the paper uses ResNet-101).
        output_stride: 16 (ASPP rates 6, 12, 18) or 8 (rates doubled).
        head_width: channels of ASPP and the decoder (256 in the papers).
        rates: ASPP rates at output stride 16 (doubled at 8).
        low_level_width: v3+ projection of the low-level features (48 in the paper; default
            ``head_width * 3 / 16``).
        encoder_width: channel multiplier of the ResNet (1 for ImageNet weights; < 1 for quick
            CPU experiments).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        pretrained: bool = False,
        backbone: str = "resnet50",
        output_stride: int = 16,
        head_width: int = 256,
        rates: tuple[int, ...] = (6, 12, 18),
        aux: bool = False,
        decoder: bool = False,
        low_level_width: int | None = None,
        encoder_width: float = 1.0,
    ) -> None:
        super().__init__(backbone, in_channels, pretrained, output_stride, encoder_width)
        c = self.encoder.channels
        scale = 16 // output_stride
        self.aspp = ASPP(c[4], head_width, rates=tuple(r * scale for r in rates))
        self.decoder = None
        if decoder:
            low = low_level_width or max(head_width * 3 // 16, 1)
            self.low_level = ConvBNReLU(c[1], low, 1)
            self.decoder = nn.Sequential(
                ConvBNReLU(head_width + low, head_width), ConvBNReLU(head_width, head_width)
            )
            self.segmentation_head = SegHead(head_width, num_classes)
        else:
            self.segmentation_head = SegHead(head_width, num_classes, mid_channels=head_width)
        self.aux_head = aux_head(c[3], num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        x, size = pad_to_multiple(x, self.output_stride)
        feats = self.encoder(x)
        y = self.aspp(feats[4])
        if self.decoder is not None:
            low = self.low_level(feats[1])
            y = self.decoder(torch.cat([resize_to(y, low.shape[-2:]), low], dim=1))
        out = logits_to_input(self.segmentation_head(y), x.shape[-2:], size)
        return aux_head_output(out, self.aux_head, feats[3], x.shape[-2:], size, self.training)


def deeplabv3(
    num_classes: int = 21, in_channels: int = 3, pretrained: bool = False, **options
) -> DeepLabV3:
    """Build DeepLab v3; ``options``: ``backbone``, ``output_stride``, ``head_width``,
    ``rates``, ``aux``, ``encoder_width``. ``pretrained=True`` loads the ImageNet ResNet into
    the encoder."""
    return DeepLabV3(num_classes, in_channels, pretrained, decoder=False, **options)


def deeplabv3plus(
    num_classes: int = 21, in_channels: int = 3, pretrained: bool = False, **options
) -> DeepLabV3:
    """Build DeepLab v3+ (v3 with the low-level-feature decoder); ``options`` as
    :func:`deeplabv3` plus ``low_level_width``."""
    return DeepLabV3(num_classes, in_channels, pretrained, decoder=True, **options)


PAPER_RATES: tuple[int, ...] = (6, 12, 18)
"""DeepLab v3's ASPP rates at output stride 16, chosen for 513 px crops: a 33 x 33 feature map."""


def scale_rates(
    feature_size: int, rates: tuple[int, ...] = PAPER_RATES, reference_size: int = 33
) -> tuple[int, ...]:
    """ASPP rates for a feature map of ``feature_size`` px, in the proportion that the paper's
    ``rates`` have to its ``reference_size`` map (33 x 33: 513 px crops at output stride 16).

    Each rate becomes ``round(rate * feature_size / reference_size)``, at least 1 and strictly
    increasing, so that every branch keeps its own field of view:
    ``scale_rates(33) == (6, 12, 18)``, ``scale_rates(16) == (3, 6, 9)``,
    ``scale_rates(6) == (1, 2, 3)``. On a map much smaller than 33,
    the paper's rates put all taps but the centre into the zero padding, and the 3x3 branches
    become 1x1 convolutions; pass the result as ``rates=`` (at output stride 16).
    """
    feature_size = checks.positive_int("feature_size", feature_size)
    reference_size = checks.positive_int("reference_size", reference_size)
    scaled: list[int] = []
    for rate in rates:
        r = max(1, round(rate * feature_size / reference_size))
        if scaled and r <= scaled[-1]:
            r = scaled[-1] + 1
        scaled.append(r)
    return tuple(scaled)
