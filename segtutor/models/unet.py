"""U-Net (Ronneberger et al., MICCAI 2015), built from :mod:`segtutor.models.blocks`."""

from __future__ import annotations

import torch
from torch import nn

from segtutor import checks

from .blocks import DoubleConv, SegHead, UpBlock, crop_to, init_weights, pad_to_multiple


class UNet(nn.Module):
    """The U-Net: a contracting path of DoubleConv + 2x2 max pool, an expanding path of
    up-convolution + skip concatenation + DoubleConv, and a 1x1 classifier.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits.

    Args:
        num_classes: output channels (1 for a binary task with BCE-on-logits).
        in_channels: input image channels.
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``
            (64 .. 1024 in the paper; use 8 or 16 for quick experiments on a CPU).
        depth: number of 2x poolings (4 in the paper).
        upsample: ``"transpose"`` (the paper's 2x2 up-convolution) or ``"bilinear"``/``"nearest"``
            (resize + convolution).
        padding: ``True`` (default) uses padded 3x3 convolutions, so the output has the input's
            size; any input size works (it is padded inside to a multiple of ``2**depth`` and the
            logits are cropped back). ``False`` reproduces the paper's valid convolutions: the
            output is smaller than the input (572 -> 388 in the paper's Fig. 1) and the skip
            connections are centre-cropped.
        dropout: probability of a ``nn.Dropout2d`` after every decoder block (0 = none, the
            paper's U-Net). Whole feature maps are zeroed, which regularises convolutional
            features better than independent pixels do (Tompson et al., CVPR 2015); the paper
            itself only drops out at the end of the contracting path.
    """

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        base_width: int = 64,
        depth: int = 4,
        upsample: str = "transpose",
        padding: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dropout = checks.number("dropout", dropout, 0.0, below=1.0)
        depth = checks.positive_int("depth", depth)
        base_width = checks.positive_int("base_width", base_width)
        pad = 1 if padding else 0
        self.padding = bool(padding)
        self.depth = depth
        self.output_stride = 2**depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.widths = widths
        self.inc = DoubleConv(in_channels, widths[0], padding=pad)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1], padding=pad))
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            UpBlock(
                widths[i + 1],
                widths[i],
                widths[i],
                upsample=upsample,
                padding=pad,
                crop_skip=not padding,
            )
            for i in reversed(range(depth))
        )
        # no parameters, so a checkpoint loads whatever the rate
        self.drop = nn.Dropout2d(float(dropout)) if dropout else nn.Identity()
        self.head = SegHead(widths[0], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None
        if self.padding:
            x, size = pad_to_multiple(x, self.output_stride)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = self.drop(up(y, skips.pop()))
        y = self.head(y)
        return crop_to(y, size) if size is not None else y


def unet(num_classes: int = 1, in_channels: int = 3, pretrained: bool = False, **options) -> UNet:
    """Build a :class:`UNet`; ``options``: ``base_width``, ``depth``, ``upsample``, ``padding``,
    ``dropout``.

    U-Net has no ImageNet encoder in the paper, so ``pretrained=True`` is an error here (use
    ``resunet34`` for a U-Net with a pretrained ResNet34 encoder).
    """
    if pretrained:
        raise ValueError(
            "unet has no pretrained encoder; use build_model('resunet34', "
            "pretrained=True) for a U-Net with an ImageNet ResNet34 encoder"
        )
    return UNet(num_classes=num_classes, in_channels=in_channels, **options)
