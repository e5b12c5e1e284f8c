"""The ResNet34 U-Net of the Kaggle TGS Salt solutions: a pretrained-able ResNet34 encoder, a
U-Net decoder with scSE attention, hypercolumn fusion, optional deep supervision and an
empty-image classification head."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from segtutor import checks

from .blocks import (
    ConvBNReLU,
    DoubleConv,
    HypercolumnFusion,
    SegHead,
    UpBlock,
    aux_output,
    crop_to,
    init_weights,
    logits_to_input,
    pad_to_multiple,
)
from .encoders import Encoder
from .renamed import RenamedHeads


class ResUNet34(RenamedHeads, nn.Module):
    """U-Net with a ResNet34 encoder.

    Encoder maps at 1/2 (stem), 1/4, 1/8, 1/16, 1/32; a DoubleConv centre; five decoder
    :class:`~segtutor.models.blocks.UpBlock` steps (bilinear upsampling, skip concatenation,
    DoubleConv, scSE of Roy et al., MICCAI 2018) back to full resolution. With
    ``hypercolumn=True`` the decoder maps of every scale are upsampled, concatenated and fused by
    a 1x1 conv-BN-ReLU before the classifier (Hariharan et al., CVPR 2015), so the final pixel
    sees coarse and fine features at once; :class:`~segtutor.models.blocks.HypercolumnFusion`
    computes that without building the full-size concatenation.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits (padded inside to a multiple of
    32, cropped back: a 101x101 TGS image works directly) from ``segmentation_head``; the
    empty-image logit comes from ``classification_head`` (``classify=True``, else None).

    Training mode returns a dict when extras are on:
    ``{"out": logits, "aux": [logits from decoder levels 1/2, 1/4, 1/8, 1/16]}`` with
    ``deep_supervision=True`` (each upsampled to the input size), and ``"cls": [B]``, the logit
    of "the mask is not empty" from global-pooled deepest features, with ``classify=True``.
    Eval mode returns the logits alone, or ``{"out": logits, "cls": [B]}`` when called with
    ``return_cls=True`` (inference that also wants the empty-image head: one forward pass).

    Args:
        decoder_width: channels of the finest decoder level (64 by default; deeper levels have
            2x and 4x).
        encoder_width: channel multiplier of the ResNet34 (1 for ImageNet weights).
        attention: scSE in each decoder block.
        full_res_skip: give the last decoder block (1/2 -> 1/1) a skip of its own, one
            conv-BN-ReLU on the input image, as the other blocks have the encoder's maps; without
            it the full-resolution map is only an upsampled 1/2 map, and thin salt edges come from
            bilinear interpolation.
        zero_init_residual: start the encoder's residual branches at zero (the last batch norm
            of each block has weight 0, as torchvision's ``zero_init_residual``), so every block
            begins as the identity (Goyal et al., 2017); for training from scratch, so refused
            with ``pretrained=True``.
    """

    # renamed: `head` (segmentation) and `classifier` (empty image); old checkpoints still load
    renamed_heads: ClassVar[dict[str, str]] = {
        "head": "segmentation_head",
        "classifier": "classification_head",
    }

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        pretrained: bool = False,
        decoder_width: int = 64,
        encoder_width: float = 1.0,
        attention: bool = True,
        hypercolumn: bool = True,
        deep_supervision: bool = False,
        classify: bool = False,
        dropout: float = 0.0,
        full_res_skip: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        checks.boolean("full_res_skip", full_res_skip)
        checks.boolean("zero_init_residual", zero_init_residual)
        if zero_init_residual and pretrained:
            raise ValueError(
                "zero_init_residual=True would zero the pretrained weights of every residual "
                "block; use it with pretrained=False"
            )
        self.encoder = Encoder("resnet34", in_channels, pretrained=pretrained, width=encoder_width)
        self.output_stride = 32
        c = self.encoder.channels  # [64, 64, 128, 256, 512] * width
        w = decoder_width
        d = [w, w, w, 2 * w, 4 * w]  # decoder channels at 1/1 .. 1/16
        self.center = DoubleConv(c[4], 4 * w)
        self.decoder = nn.ModuleList(
            [
                UpBlock(4 * w, c[3], d[4], "bilinear", attention),  # 1/32 -> 1/16
                UpBlock(d[4], c[2], d[3], "bilinear", attention),  # -> 1/8
                UpBlock(d[3], c[1], d[2], "bilinear", attention),  # -> 1/4
                UpBlock(d[2], c[0], d[1], "bilinear", attention),  # -> 1/2
                # -> 1/1: the encoder has no full-size map; optionally one conv on the input
                UpBlock(d[1], w if full_res_skip else 0, d[0], "bilinear", attention),
            ]
        )
        self.full_res = ConvBNReLU(in_channels, w) if full_res_skip else None
        # a 1x1 fusion of every scale, computed scale by scale (no full-size concatenation)
        self.hypercolumn = HypercolumnFusion(d, w) if hypercolumn else None
        self.segmentation_head = nn.Sequential(
            ConvBNReLU(w, w), nn.Dropout2d(dropout), nn.Conv2d(w, num_classes, 1)
        )
        # deep supervision heads on the decoder levels 1/2 .. 1/16
        self.aux_heads = (
            nn.ModuleList(SegHead(ch, num_classes) for ch in d[1:]) if deep_supervision else None
        )
        # the empty-image head: one logit from the global-pooled deepest features
        self.classification_head = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[4], 1))
            if classify
            else None
        )
        init_weights(self.center)
        init_weights(self.decoder)
        init_weights(self.segmentation_head)
        if self.full_res is not None:
            init_weights(self.full_res)
        if zero_init_residual:
            for block in self.encoder.modules():
                if isinstance(block, BasicBlock):
                    nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor, return_cls: bool = False) -> torch.Tensor | dict:
        x, size = pad_to_multiple(x, 32)
        e0, e1, e2, e3, e4 = self.encoder(x)
        y = self.center(e4)
        levels = []  # 1/16, 1/8, 1/4, 1/2, 1/1
        full = self.full_res(x) if self.full_res is not None else None
        for block, skip in zip(self.decoder, (e3, e2, e1, e0, full)):
            y = block(y, skip)
            levels.append(y)
        levels = levels[::-1]  # 1/1 first, for the hypercolumn
        fused = self.hypercolumn(levels) if self.hypercolumn is not None else levels[0]
        out = crop_to(self.segmentation_head(fused), size)
        if not self.training:
            if return_cls:
                if self.classification_head is None:
                    raise ValueError(
                        "return_cls=True needs the empty-image head: build the "
                        "model with classify=True"
                    )
                return {"out": out, "cls": self.classification_head(e4).squeeze(1)}
            return out
        aux = None
        if self.aux_heads is not None:
            aux = [
                logits_to_input(head(f), x.shape[-2:], size)
                for head, f in zip(self.aux_heads, levels[1:])
            ]
        extra = (
            {"cls": self.classification_head(e4).squeeze(1)}
            if self.classification_head is not None
            else {}
        )
        return aux_output(out, aux, True, **extra)


def resunet34(
    num_classes: int = 1, in_channels: int = 3, pretrained: bool = False, **options
) -> ResUNet34:
    """Build :class:`ResUNet34`; ``options``: ``decoder_width``, ``encoder_width``,
    ``attention``, ``hypercolumn``, ``deep_supervision``, ``classify``, ``dropout``,
    ``full_res_skip``, ``zero_init_residual``.
    ``pretrained=True`` loads the ImageNet ResNet34 (a 1-channel input gets the sum of the RGB
    filters)."""
    return ResUNet34(num_classes, in_channels, pretrained, **options)
