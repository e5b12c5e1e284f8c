"""Data-parallel training with PyTorch's own DistributedDataParallel, launched by ``torchrun``.

The same script runs alone (``python train.py``) or on N processes
(``torchrun --nproc_per_node=N train.py``; several machines: add ``--nnodes``, ``--node_rank``
and ``--rdzv_endpoint``). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, and does nothing when
they are absent. Each process sees its own shard of the data (``DistributedSampler``), DDP
averages the gradients, metrics are summed over ranks, and only rank 0 prints, logs and saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    ``rank`` of ``world_size`` processes, ``local_rank`` on its machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> DistInfo:
        """The running process group's view, or a single process when none is initialised."""
        if dist.is_available() and dist.is_initialized():
            return cls(
                dist.get_rank(),
                dist.get_world_size(),
                int(os.environ.get("LOCAL_RANK", dist.get_rank())),
            )
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group described by torchrun's environment variables.

    Returns (info, device): under torchrun on GPUs each process gets ``cuda:LOCAL_RANK`` and the
    NCCL backend; on CPUs the gloo backend. Without torchrun's variables: a single process and
    ``segtutor.config.device()``.
    """
    from segtutor import config

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), config.device()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("SEGTUTOR_DEVICE", "cuda").startswith(
        "cuda"
    )
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return DistInfo(rank, world_size, local_rank), device


def cleanup() -> None:
    """Leave the process group (call at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel (gradients all-reduced during backward)."""
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def distributed_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over this rank's shard (``DistributedSampler``); ``batch_size`` is per rank.

    With N ranks the effective batch is ``N * batch_size``. The sampler pads the shards to equal
    length by repeating a few samples when ``len(dataset)`` is not divisible by N.
    """
    info = DistInfo.current()
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def set_epoch(loader: object, epoch: int) -> None:
    """Tell a DistributedSampler (or a loader with ``set_epoch``) which epoch starts.

    This gives a new shuffle.
    """
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        fn = getattr(obj, "set_epoch", None)
        if callable(fn):
            fn(epoch)
            return


def reduce_mean(total: float, count: int, device: torch.device) -> float:
    """``sum(total) / sum(count)`` over all ranks (just ``total / count`` in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # gloo reduces CPU tensors, NCCL CUDA tensors
        dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.tensor([float(total), float(count)], dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total, count = float(t[0]), round(float(t[1]))
    if count == 0:
        return float("nan")
    return float(total) / count


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
