"""FCN-8s (Long, Shelhamer & Darrell, CVPR 2015) on a VGG16 encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtutor import checks

from .blocks import bilinear_kernel, crop_to, pad_to_multiple, resize_to
from .encoders import Encoder


class MatmulConv2d(nn.Conv2d):
    """A Conv2d that computes as ``unfold`` + matrix product on the CPU (same weights, same result).

    Why: FCN's ``fc6`` is a 7x7 convolution with 4096 filters applied to a tiny map (4x4 for a
    128x128 image). PyTorch's oneDNN (mkldnn) CPU kernel is extremely slow for the *backward* of
    that shape: measured on this project's 2-core CPU, about 15-70 s per small batch, against
    0.4-4 s with ``torch.backends.mkldnn`` disabled. Writing the convolution as the matrix
    product it is (im2col: ``F.unfold`` gathers every 7x7 window into a column) avoids the slow
    kernel without touching a global switch. On GPUs the ordinary ``F.conv2d`` runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(x)
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(
            x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride
        )  # [B, C*kh*kw, out_h*out_w]
        y = self.weight.flatten(1) @ cols  # [B, out, out_h*out_w]
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.view(b, self.out_channels, out_h, out_w)


class FCN8s(nn.Module):
    """FCN-8s: VGG16 with its classifier turned into convolutions, predictions at 1/32 fused
    with predictions from pool4 (1/16) and pool3 (1/8), then upsampled 8x to the input size.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits, any H and W (padded inside to a
    multiple of 32, cropped back; the paper padded the first convolution by 100 pixels instead).

    Args:
        width: multiplier of the VGG16 channels (1 = the paper's 64..512).
        fc_width: channels of fc6/fc7 (4096 in the paper; e.g. 256 for CPU experiments).
        upsample: ``"learned"``: transposed convolutions initialised to bilinear interpolation
            (2x, 2x, 8x, as in the paper), or ``"bilinear"``: fixed interpolation, no weights.
        dropout: dropout after fc6 and fc7 (0.5 in the paper).
        variant: ``"8s"`` (default), ``"16s"`` (fuse pool4 only, upsample 16x) or ``"32s"`` (no
            skip, upsample the 1/32 scores 32x): the paper's three nets, for comparison.
        batch_norm: use VGG16-BN as the encoder. The paper's plain VGG16 relies on ImageNet
            initialisation; trained from scratch (no weights at hand) the BN variant converges
            far more reliably.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        pretrained: bool = False,
        width: float = 1.0,
        fc_width: int = 4096,
        upsample: str = "learned",
        dropout: float = 0.5,
        variant: str = "8s",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if variant not in ("8s", "16s", "32s"):
            raise ValueError(f"variant must be '8s', '16s' or '32s', got {variant!r}")
        self.variant = variant
        if upsample not in ("learned", "bilinear"):
            raise ValueError(f"upsample must be 'learned' or 'bilinear', got {upsample!r}")
        fc_width = checks.positive_int("fc_width", fc_width)
        self.encoder = Encoder(
            "vgg16_bn" if batch_norm else "vgg16", in_channels, pretrained=False, width=width
        )
        self.output_stride = 32
        c3, c4, c5 = self.encoder.channels[2:]
        # fc6/fc7: VGG's fully connected layers as 7x7 and 1x1 convolutions ("convolutionalized")
        self.fc6 = MatmulConv2d(c5, fc_width, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(fc_width, num_classes, 1)
        skips = {"8s": 2, "16s": 1, "32s": 0}[variant]
        self.score_pool4 = nn.Conv2d(c4, num_classes, 1) if skips >= 1 else None
        self.score_pool3 = nn.Conv2d(c3, num_classes, 1) if skips >= 2 else None
        # the skip scores start at zero, so training begins from the coarse FCN-32s prediction
        for layer in (self.score_pool4, self.score_pool3):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.upsample = upsample
        if upsample == "learned":
            k = num_classes
            # 2x: kernel 4, stride 2, padding 1; the final 2**(5 - skips) x: kernel 2f, padding f/2
            factor = 2 ** (5 - skips)
            self.up2 = nn.ConvTranspose2d(k, k, 4, 2, 1, bias=False) if skips >= 1 else None
            self.up4 = nn.ConvTranspose2d(k, k, 4, 2, 1, bias=False) if skips >= 2 else None
            self.up8 = nn.ConvTranspose2d(k, k, 2 * factor, factor, factor // 2, bias=False)
            with torch.no_grad():
                for up in (self.up2, self.up4, self.up8):
                    if up is not None:
                        up.weight.copy_(bilinear_kernel(k, k, up.kernel_size[0]))
        if pretrained:
            self.load_imagenet()

    def load_imagenet(self) -> None:
        """ImageNet VGG16 into the encoder, and (when ``fc_width == 4096``) its first two fully
        connected layers into fc6/fc7: a Linear layer on the flattened 512x7x7 pool5 *is* a 7x7
        convolution, so its weight matrix ``[4096, 25088]`` only needs a reshape to
        ``[4096, 512, 7, 7]``: the paper's "convolutionalization"."""
        state = self.encoder.load_imagenet()
        if self.fc6.out_channels == 4096:
            with torch.no_grad():
                self.fc6.weight.copy_(state["classifier.0.weight"].view_as(self.fc6.weight))
                self.fc6.bias.copy_(state["classifier.0.bias"])
                self.fc7.weight.copy_(state["classifier.3.weight"].view_as(self.fc7.weight))
                self.fc7.bias.copy_(state["classifier.3.bias"])

    def _up(self, name: str, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample == "learned":
            return getattr(self, name)(x)
        return resize_to(x, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 32)
        _, _, pool3, pool4, pool5 = self.encoder(x)
        h = self.drop(F.relu(self.fc6(pool5)))
        h = self.drop(F.relu(self.fc7(h)))
        score = self.score_fr(h)  # 1/32
        if self.score_pool4 is not None:
            score = self._up("up2", score, pool4.shape[-2:]) + self.score_pool4(pool4)  # 1/16
        if self.score_pool3 is not None:
            score = self._up("up4", score, pool3.shape[-2:]) + self.score_pool3(pool3)  # 1/8
        score = self._up("up8", score, x.shape[-2:])  # 1/1
        return crop_to(score, size)


def fcn8s(
    num_classes: int = 21, in_channels: int = 3, pretrained: bool = False, **options
) -> FCN8s:
    """Build :class:`FCN8s`; ``options``: ``width``, ``fc_width``, ``upsample``, ``dropout``,
    ``variant`` (``"8s"``, ``"16s"``, ``"32s"``), ``batch_norm``.

    ``pretrained=True`` loads torchvision's ImageNet VGG16 into the encoder and its classifier's
    first two layers into fc6/fc7 (see :meth:`FCN8s.load_imagenet`).
    """
    return FCN8s(num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **options)
