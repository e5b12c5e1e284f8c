"""PSPNet (Zhao et al., CVPR 2017): dilated ResNet, pyramid pooling module, auxiliary loss."""

from __future__ import annotations

import torch

from .blocks import (
    PPM,
    DilatedResNetModel,
    SegHead,
    aux_head,
    aux_head_output,
    logits_to_input,
    pad_to_multiple,
)


class PSPNet(DilatedResNetModel):
    """PSPNet: a ResNet dilated to output stride 8, the pyramid pooling module (global context
    at 1x1, 2x2, 3x3 and 6x6 bins concatenated with the local features), a 3x3 conv-BN-ReLU,
    dropout and a 1x1 classifier (together ``segmentation_head``); logits upsampled bilinearly.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits. In training with ``aux=True``
    (default, as in the paper, which weights its loss 0.4) the model returns
    ``{"out": logits, "aux": logits of a head on layer3}``; the auxiliary head is not run in eval
    mode.

    Args:
        backbone: ``resnet18``, ``resnet34`` or ``resnet50`` (the paper: ResNet-50/101).
        output_stride: 8 (paper) or 16.
        bins: pooled grid sizes of the PPM; ``()`` removes the pyramid (the paper's ablation
            baseline: the dilated ResNet and the same head on its features alone).
        head_width: channels of the 3x3 conv after the PPM (512 in the paper).
        encoder_width: channel multiplier of the ResNet (1 for ImageNet weights; < 1 for quick
            CPU experiments).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        pretrained: bool = False,
        backbone: str = "resnet50",
        output_stride: int = 8,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        head_width: int = 512,
        aux: bool = True,
        encoder_width: float = 1.0,
    ) -> None:
        super().__init__(backbone, in_channels, pretrained, output_stride, encoder_width)
        c = self.encoder.channels
        self.ppm = PPM(c[4], bins=bins)
        self.segmentation_head = SegHead(
            self.ppm.out_channels, num_classes, mid_channels=head_width, dropout=0.1
        )
        self.aux_head = aux_head(c[3], num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        x, size = pad_to_multiple(x, self.output_stride)
        feats = self.encoder(x)
        out = logits_to_input(self.segmentation_head(self.ppm(feats[4])), x.shape[-2:], size)
        return aux_head_output(out, self.aux_head, feats[3], x.shape[-2:], size, self.training)


def pspnet(
    num_classes: int = 21, in_channels: int = 3, pretrained: bool = False, **options
) -> PSPNet:
    """Build :class:`PSPNet`; ``options``: ``backbone``, ``output_stride``, ``bins``,
    ``head_width``, ``aux``, ``encoder_width``. ``pretrained=True`` loads the ImageNet ResNet
    into the encoder."""
    return PSPNet(num_classes, in_channels, pretrained, **options)
