"""DataLoader helpers: seeded shuffling, seeded workers, pinned memory when CUDA is present;
and :class:`DeviceLoader`, batches sliced from tensors that already live on the device."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segtutor import checks, config


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds NumPy and ``random`` in each worker from torch's seed.

    PyTorch seeds each worker's torch generator (base seed + worker id), but a forked worker
    inherits NumPy's and Python's global state from the parent: without this, every worker
    would draw the *same* NumPy "random" augmentations.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _on_cuda(dataset: Dataset) -> bool:
    tensors = [getattr(dataset, name, None) for name in ("images", "masks")]
    return any(isinstance(t, torch.Tensor) and t.is_cuda for t in tensors)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A reproducible ``DataLoader``.

    The shuffling order comes from a ``torch.Generator`` seeded with ``seed``, workers are
    seeded by :func:`seed_worker`, and ``pin_memory`` is on when CUDA is available and the data
    are still on the CPU (pinned host memory makes the copy to the GPU asynchronous). A dataset
    whose tensors already live on the GPU needs ``num_workers=0``.

    Batches are ``(images [B, C, H, W], masks [B, H, W])``.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    num_workers = checks.non_negative_int("num_workers", num_workers)
    seed = checks.integer("seed", seed)
    on_cuda = _on_cuda(dataset)
    if on_cuda and num_workers > 0:
        raise ValueError(
            "the dataset's tensors are on the GPU: use num_workers=0 "
            "(worker processes cannot share CUDA tensors this way)"
        )
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle),
        num_workers=num_workers,
        drop_last=bool(drop_last),
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available() and not on_cuda,
        persistent_workers=False,
    )


#: a batch augmentation on the device: ``augment(images, masks) -> (images, masks)``
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DeviceLoader:
    """Batches sliced from tensors that live on the device: no DataLoader, no host-to-device copy.

    For small data sets (the whole TGS training set, 4000 images of 101x101, is about 160 MB in
    float32) keeping everything in GPU memory removes the CPU from the loop entirely; a GPU
    batch augmentation ``augment(images, masks) -> (images, masks)`` then runs on the device too.

    Args:
        images: ``[N, C, H, W]`` (or ``[N, H, W]``, given C=1) float.
        masks: ``[N, H, W]`` long (multi-class) or float (binary).
        batch_size, shuffle, seed, drop_last: as for a DataLoader; ``generator`` is kept as an
            attribute so that the Trainer's checkpoints capture the shuffling state.
        device: default ``segtutor.config.device()``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        augment: Augment | None = None,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(images, torch.Tensor) or not isinstance(masks, torch.Tensor):
            raise TypeError("images and masks must be tensors")
        if images.ndim == 3:
            images = images[:, None]
        if (
            images.ndim != 4
            or masks.shape[0] != images.shape[0]
            or masks.shape[-2:] != images.shape[-2:]
        ):
            raise ValueError(
                "images must be [N, C, H, W] and masks [N, H, W] with the same N, H, "
                f"W; got {tuple(images.shape)} and {tuple(masks.shape)}"
            )
        checks.positive_int("batch_size", batch_size)
        self.device = torch.device(device) if device is not None else config.device()
        self.images = images.to(self.device)
        self.masks = masks.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)  # CPU generator: cheap, checkpointable

    @classmethod
    def from_dataset(cls, dataset: Any, batch_size: int, **kwargs: Any) -> DeviceLoader:
        """Stack every ``(image, mask)`` of a map-style dataset once and keep them on the device."""
        items = [dataset[i] for i in range(len(dataset))]
        images = torch.stack([torch.as_tensor(im) for im, _ in items])
        masks = torch.stack([torch.as_tensor(m) for _, m in items])
        return cls(images, masks, batch_size, **kwargs)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x, y = self.images.index_select(0, idx), self.masks.index_select(0, idx)
            if self.augment is not None:
                x, y = self.augment(x, y)
            yield x, y
