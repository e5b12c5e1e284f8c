"""Segmentation models, one builder per name, all made of the blocks in :mod:`.blocks`.

>>> from segtutor.models import build_model
>>> model = build_model("unet", num_classes=5, base_width=8)   # doctest: +SKIP

Output convention, the same for every model:

- ``model.eval()(x)`` with ``x [N, in_channels, H, W]`` returns logits ``[N, num_classes, H, W]``
  at the input size, for any ``H, W`` (networks that halve the resolution pad inside and crop the
  logits back).
- In training mode, models with auxiliary outputs return a dict (torchvision style):
  ``{"out": [N, K, H, W], "aux": ...}`` where ``"aux"`` is one logits tensor (PSPNet's and
  DeepLab's layer3 head) or a list of logits tensors (deep supervision in U-Net++ and the
  ResNet34 U-Net), all at the input size; ``resunet34`` with ``classify=True`` adds
  ``"cls": [N]``, the logit of "this image has a non-empty mask". Models without auxiliary
  outputs return the logits tensor in both modes.
"""

from __future__ import annotations

import importlib

from torch import nn

from segtutor import checks

from .blocks import (
    ASPP,
    PPM,
    SCSE,
    ConvBNReLU,
    DoubleConv,
    Hypercolumn,
    HypercolumnFusion,
    SegHead,
    UpBlock,
    crop_to,
    default_conv_init,
    pad_to_multiple,
)

# name -> (module, builder function); imported on first use so one model's import cost
# (or a half-written sibling) never affects another
_REGISTRY: dict[str, tuple[str, str]] = {
    "fcn8s": ("fcn", "fcn8s"),
    "unet": ("unet", "unet"),
    "segnet": ("segnet", "segnet"),
    "unetpp": ("unetpp", "unetpp"),
    "deeplabv3": ("deeplab", "deeplabv3"),
    "deeplabv3plus": ("deeplab", "deeplabv3plus"),
    "pspnet": ("pspnet", "pspnet"),
    "resunet34": ("resunet", "resunet34"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Every name :func:`build_model` accepts."""


def build_model(
    name: str, num_classes: int = 1, in_channels: int = 3, pretrained: bool = False, **options
) -> nn.Module:
    """Build the segmentation model ``name`` (one of :data:`MODEL_NAMES`).

    Args:
        name: e.g. ``"unet"``, ``"fcn8s"``, ``"deeplabv3plus"``.
        num_classes: output channels of the logits ``[N, num_classes, H, W]``.
        in_channels: channels of the input image (1 for grey, 3 for RGB).
        pretrained: load torchvision's ImageNet weights into the encoder (offline: the files
            must already be in ``$TORCH_HOME/hub/checkpoints``; the error says which file).
        **options: model-specific sizes, e.g. ``base_width=8`` for ``unet`` (see each builder).

    Returns:
        An ``nn.Module`` in training mode, following the output convention of this package.
    """
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    num_classes = checks.positive_int("num_classes", num_classes)
    in_channels = checks.positive_int("in_channels", in_channels)
    module_name, fn_name = _REGISTRY[name.lower()]
    builder = getattr(importlib.import_module(f"{__name__}.{module_name}"), fn_name)
    return builder(
        num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **options
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared modules counted once, as ``model.parameters()`` does)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_bn_params(in_channels: int, out_channels: int, kernel_size: int) -> int:
    """Parameters of a ``kernel_size`` x ``kernel_size`` convolution without bias followed by
    BN (scale and shift; the running statistics are buffers, not parameters):
    ``k * k * in_channels * out_channels + 2 * out_channels``. For counting a model by hand from
    the layer list of its paper."""
    return kernel_size * kernel_size * in_channels * out_channels + 2 * out_channels


__all__ = [
    "ASPP",
    "MODEL_NAMES",
    "PPM",
    "SCSE",
    "ConvBNReLU",
    "DoubleConv",
    "Hypercolumn",
    "HypercolumnFusion",
    "SegHead",
    "UpBlock",
    "build_model",
    "conv_bn_params",
    "count_parameters",
    "crop_to",
    "default_conv_init",
    "pad_to_multiple",
]
