"""Checkpoints that survive a crash mid-write and load with ``torch.load(weights_only=True)``.

``weights_only=True`` refuses arbitrary pickled objects (loading a checkpoint cannot run code), so
everything stored here is a tensor or a plain type: the RNG states of Python and NumPy are turned
into tensors and ints by :func:`rng_state` and rebuilt by :func:`set_rng_state`.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtutor.fileio import atomic_write


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`segtutor.fileio.atomic_write`: a temporary file in the same
    folder (created if missing), ``fsync``, then ``os.replace`` over ``path``.

    A reader sees the old file or the new one, never half a file, and a crash during the write
    leaves the previous checkpoint intact. The file's permissions follow the umask (an existing
    checkpoint keeps its own); a target that is not a regular file raises ValueError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)
    return path


def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and PyTorch (CPU and every CUDA device) as tensors and plain
    types."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The generators that decide a loader's batches: its shuffling ``generator`` and, for a
    batch augmentation that draws from its own (``loader.augment.generator``, e.g.
    :class:`segtutor.data.loaders.DeviceLoader` with a GPU augmentation), that one."""
    found = {
        "loader_generator": getattr(loader, "generator", None),
        "augment_generator": getattr(getattr(loader, "augment", None), "generator", None),
    }
    return {k: g for k, g in found.items() if isinstance(g, torch.Generator)}


def loader_generator_state(loader: Any) -> dict[str, torch.Tensor]:
    """``{"loader_generator": state}`` of a data loader's shuffling ``torch.Generator``, plus
    ``"augment_generator"`` for an augmentation with its own (so that a resumed run sees the same
    batches), or ``{}`` when the loader has none."""
    return {k: g.get_state() for k, g in _loader_generators(loader).items()}


def restore_loader_generator(loader: Any, state: dict[str, Any]) -> None:
    """Put back the generator states saved by :func:`loader_generator_state`; nothing for a
    generator the loader lacks or the checkpoint does not hold."""
    for key, gen in _loader_generators(loader).items():
        if key in state:
            gen.set_state(state[key].cpu())


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    **extra: Any,
) -> Path:
    """Write model, optimizer, scheduler, scaler, epoch, RNG states and ``extra`` atomically.

    ``extra`` values must be tensors or plain Python types (they are loaded with weights_only).
    """
    payload: dict[str, Any] = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "rng": rng_state(),
        **extra,
    }
    return atomic_save(payload, path)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, empty, not written by ``torch.save``, or
    holding objects that ``weights_only=True`` refuses. The message names the file."""


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code runs while loading).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: (a ValueError) the file is damaged or is not a checkpoint; the message
            names the file and what ``torch.load`` said.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "checkpoint does not exist or is not a file", str(path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load fails in many ways on a bad file
        # RuntimeError (zip directory missing: truncated), EOFError (empty),
        # UnpicklingError (random bytes, or objects weights_only refuses), UnicodeDecodeError,
        # OSError(EINVAL) ...: the caller needs to know which file, whatever the way
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path}: the file is damaged (truncated or overwritten) or "
            f"is not a checkpoint saved by torch.save ({type(err).__name__}: {reason})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not the "
            "dictionary of tensors a checkpoint is"
        )
    return state


def restore(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    scaler: Any = None,
    map_location: str | torch.device | None = "cpu",
    weights_only_model: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint of :func:`save_checkpoint` into a model, and (unless
    ``weights_only_model``) its optimizer, scheduler, scaler and the RNG states, so that a run
    continues exactly; returns the whole checkpoint (its ``epoch`` and extra entries).

    The optimizer keeps the checkpoint's learning rate: when it was built with another one, a
    UserWarning says so. Raises :class:`CheckpointError` naming the file when it is damaged, is
    not a training checkpoint (no ``model``, ``epoch``, ``rng``), holds another model's weights
    or does not fit the optimizer, scheduler or scaler.
    """
    state = load_checkpoint(path, map_location=map_location)
    missing = [k for k in ("model", "epoch", "rng") if k not in state]
    if missing and not (weights_only_model and "model" in state):
        raise CheckpointError(
            f"{path} is not a Trainer checkpoint: it has no {', '.join(map(repr, missing))} entry"
        )
    try:
        unwrap(model).load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} holds the weights of another model: {first}"
        ) from None
    if weights_only_model:
        return state
    asked = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    try:
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit this trainer's optimizer, scheduler or scaler: {err}"
        ) from None
    saved = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    if state.get("optimizer") is not None and any(
        not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) for a, b in zip(asked, saved)
    ):
        warnings.warn(
            f"resuming from {path}: the optimizer was built with learning rate "
            f"{asked[0]:g}, the checkpoint's run used {saved[0]:g}; the checkpoint's is kept "
            f"(now {optimizer.param_groups[0]['lr']:g}) so that the run continues exactly. To "
            "train these weights with a new learning rate, load them with load_checkpoint(path, "
            "weights_only_model=True) and call fit() without resume.",
            UserWarning,
            stacklevel=3,
        )
    set_rng_state(_to_cpu(state["rng"]))
    return state


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model
