"""Joint image + mask transforms, built on ``torchvision.transforms.v2``.

The rule: a random geometric transform must move the image and its mask *together* (same flip,
same angle, same crop), and the mask must only ever be resampled with nearest neighbour, because
interpolating labels invents classes (between 1 and 3 a bilinear resize writes 2) and soft
binary masks. ``transforms.v2`` does both when the mask is wrapped as a ``tv_tensors.Mask``: one
call ``transform(image, mask)`` draws the parameters once and dispatches each input to its own
kernel (bilinear for ``Image``, nearest for ``Mask``; colour changes skip masks).

Contents:

- per-sample v2 transforms: :class:`RandomDihedral` (the 8 symmetries of the square),
  :class:`RandomLighting` (brightness/contrast, image only), :class:`JointResize` (bilinear
  image, nearest-exact mask), and :func:`make_augmentation` which composes them with v2 flips,
  small rotations and scale/crop;
- 101 <-> 128 helpers for TGS: :func:`pad_to_128` / :func:`unpad_from_128` (reflect padding,
  exact inverse) and :func:`resize_to` (bilinear or nearest-exact, for images, masks or logits);
- GPU batch versions for data that already lives on the device: :func:`batch_random_flip`,
  :func:`batch_random_dihedral`, :func:`batch_lighting`;
- :func:`normalize` / :func:`denormalize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from segtutor import checks
from segtutor.data.constants import MODEL_SIZE, TGS_SIZE

IGNORE_INDEX = 255


# ------------------------------------------------------------------------ v2 transforms


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply symmetry ``k`` in 0..7 of the square to the last two dims of ``x`` ``[..., H, W]``.

    ``k % 4`` quarter turns (counter-clockwise), then a transpose when ``k >= 4``. The inverse of
    ``k`` is :func:`dihedral_inverse`.
    """
    if not 0 <= int(k) < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    out = torch.rot90(x, int(k) % 4, dims=(-2, -1))
    return out.transpose(-2, -1) if k >= 4 else out


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` with the same ``k`` (for test-time augmentation)."""
    if not 0 <= int(k) < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    out = x.transpose(-2, -1) if k >= 4 else x
    return torch.rot90(out, -(int(k) % 4), dims=(-2, -1))


def _is_mask(inpt: Any) -> bool:
    return isinstance(inpt, tv_tensors.Mask)


class RandomDihedral(v2.Transform):
    """One of the 8 symmetries of the square (rotations by 90 degrees and reflections), drawn
    uniformly; image and mask get the same one. Needs square inputs for k odd or >= 4."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 8, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):
            return inpt
        out = dihedral(inpt.as_subclass(torch.Tensor), params["k"])
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomLighting(v2.Transform):
    """Random brightness shift and contrast factor on images; masks pass through unchanged.

    ``out = clamp((x - mean) * c + mean + b, 0, 1)`` with ``c ~ U(1 - contrast, 1 + contrast)``,
    ``b ~ U(-brightness, brightness)``; ``mean`` is the image's mean (per channel), so contrast
    changes keep the average grey level. Images are float in [0, 1].
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, p: float = 1.0) -> None:
        super().__init__()
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        self.brightness, self.contrast, self.p = float(brightness), float(contrast), float(p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = bool(torch.rand(()) < self.p)
        c = 1.0 + self.contrast * (2 * float(torch.rand(())) - 1)
        b = self.brightness * (2 * float(torch.rand(())) - 1)
        return {"apply": apply, "c": c, "b": b}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if _is_mask(inpt) or not isinstance(inpt, torch.Tensor) or not params["apply"]:
            return inpt
        x = inpt.as_subclass(torch.Tensor)
        if not x.is_floating_point():
            raise TypeError(f"RandomLighting expects float images in [0, 1], got {x.dtype}")
        out = _lighting(
            x,
            torch.tensor(params["c"], dtype=x.dtype, device=x.device),
            torch.tensor(params["b"], dtype=x.dtype, device=x.device),
        )
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _lighting(x: torch.Tensor, c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The lighting formula on ``[..., C, H, W]``; ``c`` and ``b`` broadcast over it."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0.0, 1.0)


class JointResize(v2.Transform):
    """Resize images bilinearly (antialiased when shrinking) and masks with nearest-exact.

    ``nearest-exact`` samples the pixel whose centre is closest to the output pixel's centre,
    the same sampling grid as bilinear with ``align_corners=False``, so image and mask stay
    aligned; plain ``nearest`` picks ``floor(i * in / out)`` and can shift the mask by a pixel.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size_pair(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):
            return inpt
        return resize_to(inpt, self.size, mask=_is_mask(inpt))


def make_augmentation(
    *,
    hflip: float = 0.5,
    vflip: float = 0.0,
    dihedral: bool = False,
    degrees: float = 0.0,
    scale: tuple[float, float] | None = None,
    size: int | Sequence[int] | None = None,
    brightness: float = 0.0,
    contrast: float = 0.0,
    mask_fill: float = IGNORE_INDEX,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> v2.Compose:
    """A joint training augmentation: call it as ``image, mask = aug(image, mask)``.

    Args:
        hflip, vflip: probabilities of a horizontal / vertical flip.
        dihedral: draw one of the 8 symmetries of the square (replaces the flips' variety).
        degrees: rotate by an angle in ``[-degrees, degrees]`` (bilinear image, nearest mask);
            pixels rotated in from outside get 0 in the image and ``mask_fill`` in the mask
            (255 = ignore for multi-class data; use 0 for binary masks).
        scale: ``(min, max)`` area fraction for a random resized crop back to ``size`` (the
            input size when ``size`` is None; then all inputs must share it).
        size: output size; also resizes when no ``scale`` is given.
        brightness, contrast: :class:`RandomLighting` ranges (0 = off).
        mean, std: per-channel normalisation applied last (images only).

    Inputs: an image ``tv_tensors.Image`` ``[C, H, W]`` float in [0, 1] and a ``tv_tensors.Mask``
    ``[H, W]`` (the datasets in :mod:`segtutor.data.datasets` wrap them).
    """
    checks.probability("hflip", hflip)
    checks.probability("vflip", vflip)
    checks.number("degrees", degrees, minimum=0.0)
    steps: list[v2.Transform] = []
    if dihedral:
        steps.append(RandomDihedral())
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    if degrees > 0:
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: mask_fill, "others": 0.0}
        steps.append(
            v2.RandomRotation(float(degrees), interpolation=InterpolationMode.BILINEAR, fill=fill)
        )
    if scale is not None:
        lo, hi = (float(s) for s in scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {scale!r}")
        steps.append(_RandomScaleCrop((lo, hi), None if size is None else _size_pair(size)))
    elif size is not None:
        steps.append(JointResize(size))
    if brightness > 0 or contrast > 0:
        steps.append(RandomLighting(brightness, contrast))
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("give both mean and std, or neither")
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


class _RandomScaleCrop(v2.Transform):
    """Crop a random square-ish region covering ``scale`` of the area and resize it back."""

    def __init__(self, scale: tuple[float, float], size: tuple[int, int] | None) -> None:
        super().__init__()
        self.scale, self.size = scale, size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(()))
        ch, cw = max(1, round(h * area**0.5)), max(1, round(w * area**0.5))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"box": (top, left, ch, cw), "size": self.size or (h, w)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):
            return inpt
        top, left, ch, cw = params["box"]
        out = inpt[..., top : top + ch, left : left + cw]
        return resize_to(out, params["size"], mask=_is_mask(inpt))


# -------------------------------------------------------------------- resize and pad


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(s) for s in size)  # type: ignore[union-attr]
        except TypeError:
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def resize_to(x: torch.Tensor, size: int | Sequence[int], *, mask: bool = False) -> torch.Tensor:
    """Resize the last two dims of ``x`` ``[..., H, W]`` to ``size``.

    Images, probabilities, logits and feature maps (``mask=False``): bilinear,
    ``align_corners=False``, antialiased when shrinking. Label maps (``mask=True``): nearest-exact,
    dtype kept, so only existing labels appear. tv_tensors keep their type. ``x`` itself comes
    back when it already has the size, and a ``[B, C, H, W]`` batch is resampled as it is (its
    memory format kept), so the models use this same function on their logits.
    """
    out_h, out_w = _size_pair(size)
    plain = x.as_subclass(torch.Tensor) if isinstance(x, tv_tensors.TVTensor) else x
    if not mask and not plain.is_floating_point():
        raise TypeError(
            f"images must be float to resize bilinearly, got {plain.dtype}; "
            "pass mask=True for label maps"
        )
    if tuple(plain.shape[-2:]) == (out_h, out_w):
        return x
    lead = plain.shape[:-2]
    flat = plain if plain.dim() == 4 else plain.reshape(-1, 1, *plain.shape[-2:])
    if mask:
        # labels travel as float64, exact for every int32 value (float32 stops at 2**24)
        out = F.interpolate(
            flat if flat.is_floating_point() else flat.double(),
            size=(out_h, out_w),
            mode="nearest-exact",
        ).to(plain.dtype)
    else:
        shrink = out_h < flat.shape[-2] or out_w < flat.shape[-1]
        out = F.interpolate(
            flat, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=shrink
        )
    out = out.reshape(*lead, out_h, out_w)
    return tv_tensors.wrap(out, like=x) if isinstance(x, tv_tensors.TVTensor) else out


def _pad_amounts(size_in: int, size_out: int) -> tuple[int, int]:
    total = size_out - size_in
    if total < 0:
        raise ValueError(f"cannot pad {size_in} to a smaller size {size_out}")
    return total // 2, total - total // 2


def pad_to_128(x: torch.Tensor, size: int = MODEL_SIZE, mode: str = "reflect") -> torch.Tensor:
    """Pad the last two dims of ``x`` ``[..., 101, 101]`` to ``[..., 128, 128]`` (13 before,
    14 after), by reflection by default so that the border has image-like content.

    Works for images (float) and masks (any dtype; reflection copies labels, never blends).
    ``mode`` is ``"reflect"``, ``"replicate"`` or ``"constant"`` (zeros). Undo with
    :func:`unpad_from_128`.
    """
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"mode must be 'reflect', 'replicate' or 'constant', got {mode!r}")
    plain = x.as_subclass(torch.Tensor) if isinstance(x, tv_tensors.TVTensor) else x
    h, w = plain.shape[-2:]
    top, bottom = _pad_amounts(h, size)
    left, right = _pad_amounts(w, size)
    if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        raise ValueError(f"reflect padding needs inputs larger than the pad; got {h}x{w} -> {size}")
    lead = plain.shape[:-2]
    flat = plain.reshape(-1, 1, h, w)
    # F.pad's reflect/replicate need a float tensor; labels are small ints, exact in float64
    work = flat if flat.is_floating_point() else flat.double()
    out = F.pad(work, (left, right, top, bottom), mode=mode).to(plain.dtype)
    out = out.reshape(*lead, size, size)
    return tv_tensors.wrap(out, like=x) if isinstance(x, tv_tensors.TVTensor) else out


def unpad_from_128(x: torch.Tensor, size: int = TGS_SIZE) -> torch.Tensor:
    """Crop the centre ``size x size`` back out of a padded ``[..., 128, 128]`` tensor: the
    exact inverse of :func:`pad_to_128` (for images, masks, logits and probabilities)."""
    h, w = x.shape[-2:]
    top, _ = _pad_amounts(size, h)
    left, _ = _pad_amounts(size, w)
    return x[..., top : top + size, left : left + size]


# --------------------------------------------------------------- GPU batch versions


def _flags(
    batch: int, p: float, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.rand(batch, device=device, generator=generator) < p


def _where_batch(flag: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view(-1, *([1] * (a.ndim - 1))), a, b)


def _check_batch(images: torch.Tensor, masks: torch.Tensor | None) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if masks is not None and (
        masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]
    ):
        raise ValueError(
            f"masks {tuple(masks.shape)} must match images {tuple(images.shape)} in B, H and W"
        )


def batch_random_flip(
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    *,
    hflip: float = 0.5,
    vflip: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip each sample of a batch independently, on whatever device the batch is.

    Args:
        images: ``[B, C, H, W]``; masks: ``[B, H, W]`` or ``[B, 1, H, W]`` (or None).
        hflip, vflip: flip probabilities per sample.
        generator: a ``torch.Generator`` on the batch's device, for reproducible draws.

    Returns ``(images, masks)``, flipped where drawn (the same flips for both).
    """
    _check_batch(images, masks)
    batch, dev = images.shape[0], images.device
    for p, dim in ((hflip, -1), (vflip, -2)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"flip probabilities must lie in [0, 1], got {p!r}")
        if p <= 0:
            continue
        flag = _flags(batch, p, dev, generator)
        images = _where_batch(flag, images.flip(dim), images)
        if masks is not None:
            masks = _where_batch(flag, masks.flip(dim), masks)
    return images, masks


def batch_random_dihedral(
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One of the 8 square symmetries per sample (square ``[B, C, S, S]`` batches).

    Returns ``(images, masks, k)`` with ``k`` ``[B]`` the symmetry index of each sample (see
    :func:`dihedral`).
    """
    _check_batch(images, masks)
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"dihedral symmetries need square images, got {tuple(images.shape[-2:])}")
    k = torch.randint(0, 8, (images.shape[0],), device=images.device, generator=generator)
    out_i, out_m = images.clone(), None if masks is None else masks.clone()
    for sym in range(8):
        sel = k == sym
        if sym == 0 or not bool(sel.any()):
            continue
        out_i[sel] = dihedral(images[sel], sym)
        if masks is not None:
            out_m[sel] = dihedral(masks[sel], sym)
    return out_i, out_m, k


def batch_lighting(
    images: torch.Tensor,
    *,
    brightness: float = 0.1,
    contrast: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:class:`RandomLighting` for a batch ``[B, C, H, W]`` in [0, 1], one draw per sample."""
    _check_batch(images, None)
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got {images.dtype}")
    batch = images.shape[0]
    shape = (batch, 1, 1, 1)
    c = 1 + contrast * (2 * torch.rand(shape, device=images.device, generator=generator) - 1)
    b = brightness * (2 * torch.rand(shape, device=images.device, generator=generator) - 1)
    return _lighting(images, c.to(images.dtype), b.to(images.dtype))


# --------------------------------------------------------------------- normalisation


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``[..., C, H, W]``."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    if (s <= 0).any():
        raise ValueError(f"std must be positive, got {list(std)}")
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The inverse of :func:`normalize` (for showing normalised images)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * s + m
