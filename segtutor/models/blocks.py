"""Building blocks shared by every segmentation model in :mod:`segtutor.models`.

Each block is written once here and composed by the models (U-Net, SegNet, U-Net++, DeepLab,
PSPNet, the ResNet34 U-Net). Shapes use ``[B, C, H, W]``.

- :class:`ConvBNReLU`: convolution (no bias, BN follows), batch norm, ReLU.
- :class:`DoubleConv`: two ConvBNReLU, the unit of U-Net and its relatives.
- :class:`SeparableConv2d`: depthwise ``k x k`` then pointwise 1x1 convolution (Xception,
  MobileNet, the encoder and heads of DeepLab v3+).
- :class:`UpBlock`: a decoder step: upsample (transposed conv or resize + conv), concatenate a
  skip connection, DoubleConv, optional scSE.
- :class:`SCSE`: concurrent spatial and channel squeeze & excitation (Roy et al., MICCAI 2018).
- :class:`ASPP`: atrous spatial pyramid pooling with an image-pooling branch and BN
  (Chen et al., arXiv 2017, DeepLab v3).
- :class:`PPM`: pyramid pooling module with bins 1, 2, 3, 6 (Zhao et al., CVPR 2017, PSPNet).
- :class:`Hypercolumn`: upsample feature maps of several scales to one size and concatenate.
- :class:`HypercolumnFusion`: a 1x1 conv-BN-ReLU over that hypercolumn, computed without
  building it (each scale projected at its own resolution, then upsampled and summed).
- :class:`SegHead`: the classifier at the end (optionally conv-BN-ReLU-dropout first), also used
  as a deep-supervision head.
- :func:`pad_to_multiple` / :func:`crop_to`: let a network that halves the resolution ``k``
  times accept any input size (pad inside, crop the logits back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from segtutor import checks
from segtutor.data.transforms import resize_to  # the one resize, for logits too

from .encoders import dilated_resnet
from .outputs import aux_output  # the output convention, built here by the models
from .renamed import RenamedHeads

UPSAMPLE_MODES = ("transpose", "bilinear", "nearest")


def _conv_padding(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    dilation: int,
    padding: int | None,
) -> int:
    """Check a convolution's sizes (positive ints) and return its padding: ``padding`` itself,
    or when None the 'same' padding ``dilation * (kernel_size - 1) // 2`` (odd kernels)."""
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("kernel_size", kernel_size),
        ("stride", stride),
        ("dilation", dilation),
    ):
        checks.positive_int(name, value)
    if padding is None:
        return dilation * (kernel_size - 1) // 2
    return checks.non_negative_int("padding", padding)


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU``; 'same' padding by default.

    ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``. The convolution has
    no bias because the batch norm right after it has its own shift (a bias would be redundant).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
    ) -> None:
        padding = _conv_padding(in_channels, out_channels, kernel_size, stride, dilation, padding)
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConv2d(nn.Sequential):
    """Depthwise separable convolution: ``depthwise`` (a ``k x k`` conv with ``groups=in_channels``:
    one filter per input channel, no mixing) then ``pointwise`` (a 1x1 conv that mixes channels).

    ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``; 'same' padding by
    default; ``stride`` and ``dilation`` apply to the depthwise step. It has
    ``k^2 C_in + C_in C_out`` weights instead of the ``k^2 C_in C_out`` of a dense conv, and
    computes what the dense conv with kernel ``W[o, i] = pointwise[o, i] * depthwise[i]`` computes.
    Nothing sits between the two steps (Xception's choice; MobileNet and DeepLab v3+ put BN and
    ReLU after each). The depthwise step has no bias: the pointwise one would only remix it into a
    constant, which its own ``bias`` already gives.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
        bias: bool = False,
    ) -> None:
        padding = _conv_padding(in_channels, out_channels, kernel_size, stride, dilation, padding)
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBNReLU: ``[B, in, H, W] -> [B, out, H, W]`` (``H-4, W-4`` with ``padding=0``).

    ``padding=0`` gives the "valid" convolutions of the original U-Net (Ronneberger et al., MICCAI
    2015), where every 3x3 convolution removes one pixel on each side.
    """

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None, padding: int = 1
    ) -> None:
        mid = mid_channels or out_channels
        super().__init__(
            ConvBNReLU(in_channels, mid, 3, padding=padding),
            ConvBNReLU(mid, out_channels, 3, padding=padding),
        )


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (Roy et al., MICCAI 2018).

    cSE: global average pool -> FC (C -> C/r) -> ReLU -> FC (C/r -> C) -> sigmoid, one weight per
    channel. sSE: a 1x1 convolution C -> 1 -> sigmoid, one weight per pixel. The two recalibrated
    maps are combined by addition (the paper's scSE) or element-wise max (``mode="max"``, the
    variant their journal follow-up preferred). ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, reduction: int = 16, mode: str = "add") -> None:
        super().__init__()
        checks.positive_int("channels", channels)
        if mode not in ("add", "max"):
            raise ValueError(f"mode must be 'add' or 'max', got {mode!r}")
        hidden = max(channels // reduction, 1)
        self.mode = mode
        self.cse = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),  # a 1x1 conv on a 1x1 map is the paper's FC layer
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = x * self.cse(x)
        spatial = x * self.sse(x)
        return channel + spatial if self.mode == "add" else torch.maximum(channel, spatial)


def center_crop_or_pad(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop (or zero-pad) ``x [B, C, h, w]`` around its centre to ``size = (H, W)``.

    The original U-Net crops its skip connections this way before concatenating them.
    """
    h, w = x.shape[-2:]
    H, W = int(size[0]), int(size[1])
    top, left = (h - H) // 2, (w - W) // 2
    # negative padding crops; F.pad handles both directions in one call
    return F.pad(x, (-left, -(w - W - left), -top, -(h - H - top)))


class UpBlock(nn.Module):
    """One decoder step: upsample ``x`` by 2, concatenate ``skip``, DoubleConv, optional scSE.

    ``x [B, in_channels, h, w]``, ``skip [B, skip_channels, H, W]`` (``H ~ 2h``) ->
    ``[B, out_channels, H, W]``.

    ``upsample="transpose"``: a learned 2x2 transposed convolution with stride 2 that also halves
    the channels (the original U-Net's "up-convolution"). ``"bilinear"``/``"nearest"``: a fixed
    resize followed by the convolutions (resize-convolution, which avoids the checkerboard
    artifacts of transposed convolutions; Odena et al., Distill 2016). After upsampling, ``x`` is
    resized to the skip's size if they differ, or, when ``crop_skip=True`` (valid convolutions),
    the skip is centre-cropped to ``x`` as in the original U-Net.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        upsample: str = "transpose",
        attention: bool = False,
        padding: int = 1,
        crop_skip: bool = False,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        self.crop_skip = crop_skip
        if upsample == "transpose":
            up_channels = in_channels // 2
            self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        else:
            up_channels = in_channels
            self.up = nn.Upsample(
                scale_factor=2,
                mode=upsample,
                **({"align_corners": False} if upsample == "bilinear" else {}),
            )
        self.conv = DoubleConv(up_channels + skip_channels, out_channels, padding=padding)
        self.attention = SCSE(out_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            if self.crop_skip:
                skip = center_crop_or_pad(skip, x.shape[-2:])
            elif x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return self.attention(self.conv(x))


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global average pool -> 1x1 conv -> BN -> ReLU -> upsample.

    Note that BN on a 1x1 map needs more than one image per batch in training mode.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., arXiv 2017, DeepLab v3).

    Parallel branches on ``[B, in_channels, H, W]``: a 1x1 conv, one 3x3 conv per atrous ``rate``,
    and (``image_pooling=True``) the global-average-pool branch; each is conv-BN-ReLU with
    ``out_channels``. They are concatenated and projected by a 1x1 conv-BN-ReLU (+ dropout) to
    ``[B, out_channels, H, W]``. The paper uses rates (6, 12, 18) at output stride 16 and doubles
    them at output stride 8.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [ConvBNReLU(in_channels, out_channels, 3, dilation=int(r)) for r in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(len(branches) * out_channels, out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class PPM(nn.Module):
    """Pyramid pooling module (Zhao et al., CVPR 2017, PSPNet).

    For each bin size ``b`` in ``bins`` (1, 2, 3, 6 in the paper): adaptive average pool to
    ``b x b``, 1x1 conv-BN-ReLU to ``in_channels / len(bins)`` channels, bilinear upsample back.
    The pooled maps are concatenated with the input:
    ``[B, C, H, W] -> [B, C + len(bins) * branch_channels, H, W]`` (``2C`` by default).
    With ``bins=()`` there is no pyramid: the module passes its input through unchanged
    (``out_channels == in_channels``), which gives PSPNet's ablation baseline, the dilated FCN.
    """

    def __init__(
        self,
        in_channels: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        branch_channels: int | None = None,
    ) -> None:
        super().__init__()
        bins = tuple(bins)
        branch_channels = branch_channels or (in_channels // len(bins) if bins else 0)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(int(b)), ConvBNReLU(in_channels, branch_channels, 1))
            for b in bins
        )
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)


class Hypercolumn(nn.Module):
    """Upsample feature maps of several scales to the size of the first and concatenate them.

    ``[[B, C0, H, W], [B, C1, H/2, W/2], ...] -> [B, C0 + C1 + ..., H, W]`` (Hariharan et al.,
    CVPR 2015: a pixel's descriptor is the stack of the features above it at every scale).
    """

    def __init__(self, mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        resized = [features[0]] + [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode=self.mode, **kwargs)
            for f in features[1:]
        ]
        return torch.cat(resized, dim=1)


class HypercolumnFusion(nn.Module):
    """A 1x1 conv-BN-ReLU over the hypercolumn of several scales, without building it.

    ``[[B, C0, H, W], [B, C1, H/2, W/2], ...] -> [B, out_channels, H, W]``; computes
    ``ConvBNReLU(C0 + C1 + ..., out_channels, kernel_size=1)`` applied to
    ``Hypercolumn()(features)``. A 1x1 convolution mixes channels and bilinear upsampling mixes
    positions with weights that sum to 1, so the two commute (bias included): each scale is
    projected to ``out_channels`` at its own resolution and only those maps are upsampled and
    summed. The concatenation at full resolution, and a 3x3 convolution over it, were about
    half of a training step of the quick ResNet34 U-Net on a CPU.

    ``weight`` holds the 1x1 kernels of every scale side by side, ``[out, C0 + C1 + ..., 1, 1]``,
    as the convolution over the concatenation would.
    """

    def __init__(
        self, in_channels: Sequence[int], out_channels: int, mode: str = "bilinear"
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("in_channels must name the channels of at least one scale")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.splits = [checks.positive_int("in_channels", c) for c in in_channels]
        out_channels = checks.positive_int("out_channels", out_channels)
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(out_channels, sum(self.splits), 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.splits):
            raise ValueError(
                f"features: expected {len(self.splits)} maps, one per scale, got {len(features)}"
            )
        size = features[0].shape[-2:]
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        fused = None
        for f, w in zip(features, self.weight.split(self.splits, dim=1)):
            y = F.conv2d(f, w)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode=self.mode, **kwargs)
            fused = y if fused is None else fused + y
        return F.relu(self.bn(fused))


class SegHead(nn.Sequential):
    """Per-pixel classifier ``[B, in_channels, H, W] -> [B, num_classes, H, W]``.

    With ``mid_channels`` it is 3x3 conv-BN-ReLU, dropout, 1x1 conv (the FCN/PSPNet/DeepLab head
    and the auxiliary head); without, a single 1x1 convolution (a deep-supervision head).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        mid_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        checks.positive_int("num_classes", num_classes)
        layers: list[nn.Module] = []
        if mid_channels:
            layers += [ConvBNReLU(in_channels, mid_channels, 3)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_channels = mid_channels
        layers.append(nn.Conv2d(in_channels, num_classes, 1))
        super().__init__(*layers)


def aux_head(in_channels: int, num_classes: int) -> SegHead:
    """The auxiliary head on ``layer3`` of a dilated ResNet (PSPNet's deep supervision,
    torchvision's ``aux_loss``): 3x3 conv-BN-ReLU to a quarter of the channels, dropout 0.1, 1x1
    classifier. ``[B, in_channels, h, w] -> [B, num_classes, h, w]``."""
    return SegHead(in_channels, num_classes, mid_channels=max(in_channels // 4, 1), dropout=0.1)


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "constant"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x [B, C, H, W]`` at the bottom/right so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)``, for :func:`crop_to`. Padding at the
    bottom/right keeps pixel (0, 0) where it was, so cropping back is a plain slice.
    """
    checks.positive_int("multiple", multiple)
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # reflect needs the pad smaller than the size; fall back to zeros for tiny inputs
        use = mode if (mode != "reflect" or (ph < h and pw < w)) else "constant"
        x = F.pad(x, (0, pw, 0, ph), mode=use)
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pad_to_multiple`: keep the top-left ``size = (H, W)`` of ``x``."""
    return x[..., : size[0], : size[1]]


def logits_to_input(
    logits: torch.Tensor, padded_size: Sequence[int], size: tuple[int, int]
) -> torch.Tensor:
    """Low-resolution logits ``[B, K, h, w]`` back to the input: bilinear upsampling to the
    padded input's ``padded_size``, then the padding of :func:`pad_to_multiple` cropped away:
    ``[B, K, *size]``."""
    return crop_to(resize_to(logits, padded_size), size)


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``[in, out, k, k]`` that make a ConvTranspose2d do bilinear upsampling per channel.

    FCN (Long et al., CVPR 2015) initialises its learned upsampling layers with this kernel.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    for i in range(min(in_channels, out_channels)):
        weight[i, i] = filt
    return weight


def init_weights(module: nn.Module) -> None:
    """He (Kaiming) initialisation for convolutions, BN to identity; used by models built here."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def default_conv_init(module: nn.Module) -> nn.Module:
    """PyTorch's own initialisation (``reset_parameters``) for every ``Conv2d`` and
    ``ConvTranspose2d`` in ``module``, in place of :func:`init_weights`' He initialisation;
    returns ``module``, changed in place.

    ``reset_parameters`` draws weights uniformly within ``1 / sqrt(fan_in)`` (Kaiming-uniform with
    ``a = sqrt(5)``), about ``sqrt(6)`` times smaller than He's standard deviation for ReLU. A plain
    deep stack without skips (SegNet) trained from scratch at a narrow width can stay at the
    all-background answer with He initialisation for some seeds and learns with this one.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.reset_parameters()
    return module


def aux_head_output(
    out: torch.Tensor,
    aux_head: nn.Module | None,
    feature: torch.Tensor,
    padded_size: Sequence[int],
    size: tuple[int, int],
    training: bool,
) -> torch.Tensor | dict:
    """The output of a model with one auxiliary head on an encoder map (PSPNet's and DeepLab's
    head on ``layer3``): ``aux_head(feature)`` upsampled like the main logits ``out``, run in
    training mode only (see :func:`segtutor.models.outputs.aux_output`)."""
    aux = None
    if aux_head is not None and training:
        aux = logits_to_input(aux_head(feature), padded_size, size)
    return aux_output(out, aux, training)


class DilatedResNetModel(RenamedHeads, nn.Module):
    """The frame that DeepLab v3/v3+ and PSPNet share: a dilated ResNet encoder
    (:func:`segtutor.models.encoders.dilated_resnet`, ``encoder_width`` its channel multiplier)
    whose last map feeds a context module (ASPP, PPM) and a segmentation head, and an optional
    auxiliary head on ``layer3`` that runs in training only (:func:`aux_head_output`).

    Subclasses build their modules after calling this ``__init__`` and write their own
    ``forward`` (the chapters show it).
    """

    # the segmentation head was called `classifier` (old checkpoints still load)
    renamed_heads: ClassVar[dict[str, str]] = {"classifier": "segmentation_head"}

    def __init__(
        self,
        backbone: str,
        in_channels: int,
        pretrained: bool,
        output_stride: int,
        encoder_width: float,
    ) -> None:
        super().__init__()
        self.encoder = dilated_resnet(
            backbone, in_channels, pretrained, output_stride, encoder_width
        )
        self.output_stride = output_stride
