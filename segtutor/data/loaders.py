"""DataLoader helpers: seeded shuffling, seeded workers, pinned memory when CUDA is present."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


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


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A reproducible ``DataLoader``.

    The shuffling order comes from a ``torch.Generator`` seeded with ``seed``, workers are
    seeded by :func:`seed_worker`, and ``pin_memory`` is on when CUDA is available and the data
    are still on the CPU (pinned host memory makes the copy to the GPU asynchronous). A dataset
    whose tensors already live on the GPU needs ``num_workers=0``.

    Batches are ``(images [B, C, H, W], masks [B, H, W])``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    on_cuda = _on_cuda(dataset)
    if on_cuda and num_workers > 0:
        raise ValueError("the dataset's tensors are on the GPU: use num_workers=0 "
                         "(worker processes cannot share CUDA tensors this way)")
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
