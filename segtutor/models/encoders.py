"""Encoders: torchvision classification backbones that return multi-scale feature maps.

A classification network is a segmentation encoder once its classifier is removed and the
feature maps are read at several depths (FCN, U-Net-style decoders, DeepLab). :class:`Encoder`
does this the ``IntermediateLayerGetter`` way: it owns the backbone's layers, runs them in order
in its own ``forward`` and keeps the outputs at the end of each stage (no forward hooks).

Supported: ``vgg16``, ``vgg16_bn``, ``resnet18``, ``resnet34``, ``resnet50``. Every encoder
returns five maps, at strides 2, 4, 8, 16, 32 of the input (``encoder.reductions``), with
``encoder.channels`` channels; ``output_stride=16`` or ``8`` replaces the last stride(s) of a
ResNet with dilation (Chen et al., DeepLab), so the deepest maps stay at 1/16 or 1/8.

``width`` (< 1 for quick experiments) scales every stage's channels; only ``width=1`` can load
ImageNet weights. ``pretrained=True`` loads torchvision's ImageNet weights from the local cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) and never
downloads; when the file is missing the error names it and the folder to put it in. Pretrained
encoders expect ImageNet-normalised input (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225).
:func:`load_encoder_weights` loads a backbone the project trained itself (a state dict saved
with ``torch.save``) through the same code as the ImageNet weights.

``stem_pool=False`` drops a ResNet's stem max pool: on small inputs (101 px TGS tiles) the stride-2
conv and the stride-2 pool together take 101 px to 26 px before the first block; without the pool
``layer1`` works at 51 px and every later map is twice as large (reductions 2, 2, 4, 8, 16).
"""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from segtutor import checks

ENCODER_NAMES = ("vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50")

# torchvision's VGG16 configuration: channels of each 3x3 conv, "M" = 2x2 max pool
_VGG16_CFG = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]
_RESNET_LAYOUT = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def checkpoint_path(arch: str) -> tuple[str, str]:
    """``(file name, folder)`` where torchvision's ImageNet weights of ``arch`` are cached."""
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    filename = os.path.basename(urlparse(weights.url).path)
    return filename, os.path.join(torch.hub.get_dir(), "checkpoints")


def load_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict of ``arch``, from the local cache only.

    Goes through the weights API (``get_model_weights(arch).IMAGENET1K_V1.get_state_dict``),
    which reads the cached file when present. Raises ``FileNotFoundError`` naming the file and
    folder when it is absent, instead of trying a download.
    """
    filename, folder = checkpoint_path(arch)
    if not os.path.isfile(os.path.join(folder, filename)):
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        raise FileNotFoundError(
            f"pretrained=True needs torchvision's ImageNet weights for {arch}, which are not on "
            f"this machine and are never downloaded at run time. Place the file {filename!r} in "
            f"the folder {folder!r} (for example download {weights.url} elsewhere and copy it "
            "there; TORCH_HOME moves the folder), or use pretrained=False."
        )
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    return weights.get_state_dict(progress=False, weights_only=True)


def _scaled(channels: int, width: float) -> int:
    return max(round(channels * width), 1)


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs (weights: see :func:`_adapt_rgb_weight`)."""
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
    )


def _adapt_rgb_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained RGB filters ``[out, 3, k, k]`` for ``in_channels`` inputs: the mean over RGB,
    repeated and rescaled so a grey image repeated 3 times gives the same response (for one
    channel this is the sum of the RGB filters)."""
    if weight.shape[1] == in_channels:
        return weight
    return weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1) * (3 / in_channels)


class Encoder(nn.Module):
    """Multi-scale features of a torchvision backbone.

    ``forward(x [B, in_channels, H, W]) -> list`` of 5 maps ``[B, channels[i], H / r_i, W / r_i]``
    with ``r = reductions`` (2, 4, 8, 16, 32; capped at ``output_stride`` for ResNets; 2, 2, 4,
    8, 16 for a ResNet with ``stem_pool=False``).

    VGG: the maps after each of the 5 max-pools (FCN's pool1..pool5); the layers are kept in a
    flat ``features`` ``nn.Sequential`` with torchvision's indices. ResNet: ``relu(bn1(conv1))``
    at 1/2, then ``layer1`` (after the max pool) .. ``layer4``, named as in torchvision.
    """

    def __init__(
        self,
        name: str = "resnet34",
        in_channels: int = 3,
        pretrained: bool = False,
        output_stride: int = 32,
        width: float = 1.0,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if name not in ENCODER_NAMES:
            raise ValueError(f"encoder name must be one of {ENCODER_NAMES}, got {name!r}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        checks.number("width", width, maximum=4, above=0)  # a channel multiplier
        checks.boolean("stem_pool", stem_pool)
        if pretrained and width != 1:
            raise ValueError(
                f"pretrained weights exist only for width=1; got width={width} with pretrained=True"
            )
        self.name = name
        self.width = width
        self.in_channels = in_channels
        self.kind = "vgg" if name.startswith("vgg") else "resnet"
        if self.kind == "vgg":
            if output_stride != 32:
                raise ValueError(f"{name} supports output_stride=32 only, got {output_stride}")
            if not stem_pool:
                raise ValueError(f"stem_pool=False applies to ResNets only, got {name}")
            self._build_vgg(batch_norm=name.endswith("_bn"), width=width)
        else:
            self._build_resnet(name, width, output_stride)
            if not stem_pool:
                # no parameters, so state dicts with and without the pool are interchangeable
                self.maxpool = nn.Identity()
        self.stem_pool = stem_pool
        self.output_stride = output_stride
        strides = (2, 4, 8, 16, 32) if stem_pool else (2, 2, 4, 8, 16)
        self.reductions = [min(r, output_stride) for r in strides]
        if pretrained:
            self.load_imagenet()

    # -- construction --------------------------------------------------------------------
    def _build_vgg(self, batch_norm: bool, width: float) -> None:
        layers: list[nn.Module] = []
        cin = self.in_channels
        self.channels = []
        self._taps: list[int] = []
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self._taps.append(len(layers) - 1)
                self.channels.append(cin)
                continue
            cout = _scaled(v, width)
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)

    def _build_resnet(self, name: str, width: float, output_stride: int) -> None:
        block, counts = _RESNET_LAYOUT[name]
        base = _scaled(64, width)
        self.conv1 = nn.Conv2d(self.in_channels, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # layer4 (and layer3 at output stride 8) trade their stride 2 for dilation
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[
            output_stride
        ]
        self._inplanes, self._dilation = base, 1
        self.layer1 = self._make_layer(block, base, counts[0], stride=1, dilate=False)
        self.layer2 = self._make_layer(block, base * 2, counts[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, base * 4, counts[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, base * 8, counts[3], 2, dilate[2])
        e = block.expansion
        self.channels = [base, base * e, base * 2 * e, base * 4 * e, base * 8 * e]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self, block: type, planes: int, blocks: int, stride: int, dilate: bool
    ) -> nn.Sequential:
        """torchvision's ``ResNet._make_layer`` with a width and with dilation for BasicBlock
        too (torchvision's BasicBlock refuses dilation > 1, so its 3x3 convs are set after)."""
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes) for _ in range(1, blocks)]
        # as torchvision: the first block keeps the previous dilation, the others the new one
        for i, layer in enumerate(layers):
            d = previous if i == 0 else self._dilation
            for conv in layer.modules():
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (d, d), (d, d)
        return nn.Sequential(*layers)

    def load_imagenet(self) -> dict[str, torch.Tensor]:
        """Load torchvision's ImageNet weights (see :func:`load_imagenet_state_dict`) and return
        the full state dict (with the classifier, which FCN reuses)."""
        if self.width != 1:
            raise ValueError(f"pretrained weights exist only for width=1, got width={self.width}")
        full = load_imagenet_state_dict(self.name)
        self.load_backbone(full)
        return full

    def load_backbone(self, full: dict[str, torch.Tensor]) -> None:
        """Load the state dict of a classification network with this encoder's layout (the
        torchvision names): the classifier keys (``fc.``, ``classifier.``) are dropped, RGB
        first-layer filters are adapted to ``in_channels``, every other key must match
        (``strict``). A mismatch of shapes (another ``width``) raises ``ValueError``."""
        state = {k: v for k, v in full.items() if not k.startswith(("fc.", "classifier."))}
        first = "features.0.weight" if self.kind == "vgg" else "conv1.weight"
        if first in state and state[first].shape[1] == 3:
            state[first] = _adapt_rgb_weight(state[first], self.in_channels)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"the weights do not fit this {self.name} encoder (width {self.width:g}, "
                f"{self.in_channels} input channels): {err}"
            ) from err

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        if self.kind == "vgg":
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self._taps:
                    feats.append(x)
            return feats
        x = self.relu(self.bn1(self.conv1(x)))
        feats.append(x)
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    def stages(self) -> list[nn.Module]:
        """The modules of each stage, for freezing part of the encoder."""
        if self.kind == "vgg":
            bounds = [0] + [t + 1 for t in self._taps]
            return [self.features[a:b] for a, b in itertools.pairwise(bounds)]
        return [
            nn.ModuleList([self.conv1, self.bn1]),
            self.layer1,
            self.layer2,
            self.layer3,
            self.layer4,
        ]


def load_encoder_weights(encoder: Encoder, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load backbone weights the project trained itself into ``encoder`` and return the file's
    state dict.

    ``path`` holds a state dict saved with ``torch.save`` in torchvision's names (the encoder's
    own keys, plus optionally a classifier under ``fc.``/``classifier.``, which is skipped); it
    is read with ``weights_only=True`` and loaded by :meth:`Encoder.load_backbone`, the code that
    loads the ImageNet weights. Raises ``FileNotFoundError`` naming ``path`` when it is missing.
    """
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder must be an Encoder, got {type(encoder).__name__}")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no encoder weights at {os.fspath(path)!r}: train and save them first "
            "(torch.save(state_dict, path)) or check the path"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{os.fspath(path)!r} holds a {type(state).__name__}, not a state dict")
    encoder.load_backbone(state)
    return state


DILATED_BACKBONES = ("resnet18", "resnet34", "resnet50")


def dilated_resnet(
    backbone: str,
    in_channels: int = 3,
    pretrained: bool = False,
    output_stride: int = 8,
    width: float = 1.0,
) -> Encoder:
    """The encoder of DeepLab and PSPNet: a ResNet whose last stride(s) became dilation, so its
    deepest map is at 1/``output_stride`` (16 or 8) of the input, with the receptive field of the
    original network."""
    if backbone not in DILATED_BACKBONES:
        raise ValueError(
            f"backbone must be one of {', '.join(DILATED_BACKBONES)}, got {backbone!r}"
        )
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
    return Encoder(
        backbone, in_channels, pretrained=pretrained, output_stride=output_stride, width=width
    )


class _StaysInEval:
    """Mixin of a frozen BN layer: ``train(mode)`` leaves it in eval mode, so its running
    statistics stay fixed while the model around it trains."""

    def train(self, mode: bool = True) -> nn.Module:
        return super().train(False)


class _FrozenBatchNorm1d(_StaysInEval, nn.BatchNorm1d):
    pass


class _FrozenBatchNorm2d(_StaysInEval, nn.BatchNorm2d):
    pass


class _FrozenBatchNorm3d(_StaysInEval, nn.BatchNorm3d):
    pass


class _FrozenSyncBatchNorm(_StaysInEval, nn.SyncBatchNorm):
    pass


# a frozen BN layer changes class (same parameters, buffers and state dict keys) and back
_FROZEN_BN = {
    nn.BatchNorm1d: _FrozenBatchNorm1d,
    nn.BatchNorm2d: _FrozenBatchNorm2d,
    nn.BatchNorm3d: _FrozenBatchNorm3d,
    nn.SyncBatchNorm: _FrozenSyncBatchNorm,
}
_PLAIN_BN = {frozen: plain for plain, frozen in _FROZEN_BN.items()}


def freeze(module: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) ``module``: every parameter with ``requires_grad_``, and every
    BatchNorm layer in eval mode, where it stays through ``model.train()``.

    ``requires_grad_(False)`` is the working way to stop gradients; ``module.requires_grad =
    False`` only sets an attribute on the Module object and freezes nothing. BN layers keep
    updating their running statistics in training mode even without gradients, so a frozen
    encoder would drift from the statistics it was trained with; here they stay fixed (their
    ``train()`` keeps them in eval mode) until ``freeze(module, frozen=False)``, which gives
    them back the mode of ``module``. Returns ``module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    module.requires_grad_(not frozen)
    for layer in module.modules():
        if frozen and type(layer) in _FROZEN_BN:
            layer.__class__ = _FROZEN_BN[type(layer)]
            layer.train(False)
        elif not frozen and type(layer) in _PLAIN_BN:
            layer.__class__ = _PLAIN_BN[type(layer)]
            layer.train(module.training)
        elif (
            frozen
            and isinstance(layer, nn.modules.batchnorm._BatchNorm)
            and not isinstance(layer, _StaysInEval)
        ):
            raise TypeError(
                f"freeze() keeps nn.BatchNorm1d/2d/3d and SyncBatchNorm layers in "
                f"eval mode; {type(layer).__name__} is another BN class"
            )
    return module
