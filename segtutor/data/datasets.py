"""Datasets: tensors in memory, and a folder of images with a folder of label PNGs.

Both return ``(image [C, H, W] float32, mask [H, W])`` pairs. Masks are int64 label maps for
multi-class data (255 = ignore) and float32 {0, 1} maps for binary data. A ``transform`` is any
callable ``transform(image, mask) -> (image, mask)``; the ones in :mod:`segtutor.data.transforms`
(torchvision ``transforms.v2``) apply the same random geometry to both, because the mask is
passed as a ``tv_tensors.Mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

IGNORE_INDEX = 255

PairTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def apply_pair_transform(
    transform: PairTransform | None, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``transform`` on an image ``[C, H, W]`` and mask ``[H, W]``; return plain tensors.

    The image goes in as ``tv_tensors.Image`` and the mask as ``tv_tensors.Mask`` so that v2
    transforms know which one may be interpolated; the dtypes of the mask are kept.
    """
    if transform is None:
        return image, mask
    mask_dtype = mask.dtype
    out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    out_image = out_image.as_subclass(torch.Tensor)
    out_mask = out_mask.as_subclass(torch.Tensor)
    if out_mask.ndim == 3 and out_mask.shape[0] == 1:
        out_mask = out_mask[0]
    return out_image, out_mask.to(mask_dtype)


class InMemoryDataset(Dataset):
    """Images and masks held as tensors, optionally on the GPU.

    Args:
        images: ``[N, C, H, W]`` or ``[N, H, W]`` (then C = 1), float in [0, 1] or uint8
            (scaled to [0, 1]).
        masks: ``[N, H, W]``; integer dtypes become int64 labels (255 = ignore), float dtypes
            float32 binary masks.
        transform: ``transform(image, mask) -> (image, mask)``, e.g. from
            :mod:`segtutor.data.transforms`.
        device: move the tensors there once (e.g. ``"cuda"``), so a loader with
            ``num_workers=0`` hands out batches that are already on the device.

    ``dataset[i]`` is ``(image [C, H, W] float32, mask [H, W])``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        transform: PairTransform | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        masks = torch.as_tensor(masks)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4:
            raise ValueError(
                f"images must be [N, C, H, W] or [N, H, W], got shape {tuple(images.shape)}"
            )
        if masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and masks {tuple(masks.shape)} "
                "must agree in N, H and W"
            )
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif not images.is_floating_point():
            raise TypeError(f"images must be float or uint8, got {images.dtype}")
        images = images.float()
        masks = masks.float() if masks.is_floating_point() else masks.long()
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if device is not None:
            images, masks = images.to(device), masks.to(device)
        self.images = images
        self.masks = masks
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return apply_pair_transform(self.transform, self.images[index], self.masks[index])


def _index_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                raise ValueError(
                    f"two {what} files share the stem {path.stem!r}: "
                    f"{files[path.stem].name} and {path.name}"
                )
            files[path.stem] = path
    return files


def _short_list(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def read_label_png(path: str | Path) -> np.ndarray:
    """A label PNG as int64 ``[H, W]``: palette ("P") indices or grey values, 255 = ignore.

    RGB label images are refused: their colours would need a palette to become labels.
    """
    with Image.open(path) as im:
        if im.mode == "P" or im.mode == "L":
            return np.asarray(im, dtype=np.uint8).astype(np.int64)
        if im.mode in ("I;16", "I"):
            return np.asarray(im).astype(np.int64)
        if im.mode == "1":
            return np.asarray(im, dtype=np.uint8).astype(np.int64)
        raise ValueError(
            f"{path}: label PNGs must be palette (P) or grey (L), got mode {im.mode}; "
            "convert colour masks to class indices first"
        )


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as float32 ``[C, H, W]`` in [0, 1] (C = 1 for grey, 3 for colour)."""
    with Image.open(path) as im:
        if im.mode == "L":
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)[None]
        if im.mode.startswith("I;16"):
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 65535.0)[None]
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class SegmentationDataset(Dataset):
    """Pairs ``image_dir/<stem>.<ext>`` with ``mask_dir/<stem>.png`` by file stem.

    Args:
        image_dir: folder of images (png, jpg, tif, bmp).
        mask_dir: folder of label PNGs, palette or grey; the value 255 means ignore.
        transform: ``transform(image, mask) -> (image, mask)``.
        binary: return float32 {0, 1} masks (grey masks with 0/255 or 0/1 values, as in the TGS
            data) instead of int64 labels.

    An image without a mask (or a mask without an image) is an error that lists the stems.
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        transform: PairTransform | None = None,
        *,
        binary: bool = False,
    ) -> None:
        images = _index_by_stem(Path(image_dir), "image")
        masks = _index_by_stem(Path(mask_dir), "mask")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) without a mask: {_short_list(no_mask)}")
            if no_image:
                parts.append(f"{len(no_image)} mask(s) without an image: {_short_list(no_image)}")
            raise ValueError(f"unpaired files in {image_dir} / {mask_dir}: " + "; ".join(parts))
        if not images:
            raise ValueError(f"no images found in {image_dir}")
        self.stems = sorted(images)
        self.image_paths = [images[s] for s in self.stems]
        self.mask_paths = [masks[s] for s in self.stems]
        self.transform = transform
        self.binary = bool(binary)

    def __len__(self) -> int:
        return len(self.stems)

    def load_mask(self, index: int) -> torch.Tensor:
        """The stored mask ``[H, W]`` without transform (int64, or float32 when binary)."""
        lab = read_label_png(self.mask_paths[index])
        if self.binary:
            return torch.from_numpy((lab > 0).astype(np.float32))
        return torch.from_numpy(lab)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.image_paths[index])
        mask = self.load_mask(index)
        if image.shape[-2:] != mask.shape:
            raise ValueError(
                f"{self.image_paths[index].name}: image {tuple(image.shape[-2:])} and "
                f"mask {tuple(mask.shape)} sizes differ"
            )
        return apply_pair_transform(self.transform, image, mask)
