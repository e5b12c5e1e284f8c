"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017) on a VGG16-BN encoder."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, crop_to, init_weights, pad_to_multiple
from .encoders import Encoder


class SegNet(nn.Module):
    """SegNet: the 13 convolutions of VGG16-BN as encoder, a mirrored decoder of 13
    convolutions, and max *unpooling*: each decoder stage upsamples with the argmax indices saved
    by the matching encoder max pool, so values return to the positions they came from and the
    decoder only has to densify the sparse map.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits (padded inside to a multiple of
    32 and cropped back).

    Every decoder layer is its own module with its own weights (see :func:`decoder_stage`).

    Args:
        width: multiplier of the VGG16 channels (1 = the paper's 64..512).
    """

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        pretrained: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = Encoder("vgg16_bn", in_channels, pretrained=False, width=width)
        self.output_stride = 32
        c = self.encoder.channels  # [64, 128, 256, 512, 512] * width
        # mirrored decoder, deepest stage first: (in, out, number of convolutions)
        spec = [(c[4], c[3], 3), (c[3], c[2], 3), (c[2], c[1], 3), (c[1], c[0], 2)]
        self.decoder = nn.ModuleList(decoder_stage(cin, cout, n) for cin, cout, n in spec)
        # last stage: one conv-BN-ReLU, then the classifier (3x3, as in the paper's conv1_1_D)
        self.decoder.append(
            nn.Sequential(ConvBNReLU(c[0], c[0]), nn.Conv2d(c[0], num_classes, 3, padding=1))
        )
        init_weights(self)
        if pretrained:
            self.encoder.load_imagenet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 32)
        indices, shapes = [], []
        for stage in self.encoder.stages():
            x = stage[:-1](x)  # the stage's convolutions ...
            shapes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)  # ... and its pool, with argmax
            indices.append(idx)
        for stage in self.decoder:
            x = F.max_unpool2d(x, indices.pop(), 2, 2, output_size=shapes.pop())
            x = stage(x)
        return crop_to(x, size)


def decoder_stage(in_channels: int, out_channels: int, n: int) -> nn.Sequential:
    """``n`` ConvBNReLU layers, ``in -> in -> ... -> out``, each a *new* module.

    The bug this avoids: ``nn.Sequential(*[conv, bn, relu] * n)`` repeats the *same* three
    module objects ``n`` times, so the "n layers" share one set of weights (and the parameter
    count does not grow with ``n``).
    """
    channels = [in_channels] * n + [out_channels]
    return nn.Sequential(*(ConvBNReLU(a, b) for a, b in itertools.pairwise(channels)))


def segnet(
    num_classes: int = 1, in_channels: int = 3, pretrained: bool = False, **options
) -> SegNet:
    """Build :class:`SegNet`; ``options``: ``width``. ``pretrained=True`` loads torchvision's
    ImageNet VGG16-BN into the encoder."""
    return SegNet(
        num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **options
    )
