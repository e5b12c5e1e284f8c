"""Where the code runs and how big the work is.

Two switches, both read from the environment so that a chapter, a test and the command line
agree without passing flags around:

- ``SEGTUTOR_DEVICE``: ``cuda``, ``cuda:1``, ``mps`` or ``cpu``. Unset: CUDA, then MPS, then CPU.
- ``SEGTUTOR_QUICK``: ``1`` for quick mode, ``0`` for full mode. Unset: quick exactly when no
  CUDA device is present, so a laptop runs every chapter in minutes and a GPU runs the real thing.

Quick mode is a *size*, not a different code path: chapters pick fewer images, epochs and
channels with :func:`pick`, and call the same functions either way.
"""

from __future__ import annotations

import os
import random
import textwrap
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def device() -> torch.device:
    """The device to compute on: ``SEGTUTOR_DEVICE`` if set, else cuda > mps > cpu."""
    wanted = os.environ.get("SEGTUTOR_DEVICE", "").strip()
    if wanted:
        try:
            dev = torch.device(wanted)
        except RuntimeError as err:
            raise ValueError(
                f"SEGTUTOR_DEVICE={wanted!r} is not a device; expected cpu, cuda, cuda:N or mps"
            ) from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"SEGTUTOR_DEVICE={wanted!r} but no CUDA device is available")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"SEGTUTOR_DEVICE={wanted!r} but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_quick() -> bool:
    """True in quick mode: ``SEGTUTOR_QUICK=1``, or unset and no CUDA device present."""
    raw = os.environ.get("SEGTUTOR_QUICK", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw:
        raise ValueError(f"SEGTUTOR_QUICK={raw!r}; expected 1 (quick) or 0 (full)")
    return not torch.cuda.is_available()


QUICK: bool = is_quick()


def in_book_build() -> bool:
    """True while ``scripts/build_book.py`` executes the chapters for the static book
    (``SEGTUTOR_BOOK_BUILD=1``): no reader can move a slider there, so interactive demos show a
    note instead (:func:`segtutor.viz.interactive`)."""
    return os.environ.get("SEGTUTOR_BOOK_BUILD", "").strip().lower() in _TRUE


"""Quick mode, read once at import. Chapters use this; tests may call :func:`is_quick`."""


def pick(quick: T, full: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise (re-reads the environment)."""
    return quick if is_quick() else full


def device_name(dev: torch.device | None = None) -> str:
    """Human-readable device, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``."""
    dev = dev or device()
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(dev)


def describe(work: str | None = None, *, width: int = 88) -> str:
    """The lines for the top of a chapter: the device and the mode, plus what the chapter computes.

    The text is wrapped at ``width`` characters (default 88, the width of the book's code
    cells) so that it reads without horizontal scrolling. Newlines in ``work`` are kept; a
    wrapped line continues indented by two spaces, or by its own indentation if it has one,
    so a continuation never looks like a new statement.

    >>> describe("3 epochs on 200 images")  # doctest: +SKIP
    'device cpu (2 threads), quick mode: 3 epochs on 200 images'
    """
    if work is not None and not isinstance(work, str):
        raise TypeError(f"work must be a str or None, got {type(work).__name__}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 20:
        raise ValueError(f"width must be an int >= 20 (characters), got {width!r}")
    mode = "quick mode" if is_quick() else "full mode"
    line = f"device {device_name()}, {mode}"
    text = f"{line}: {work}" if work else line
    return "\n".join(_wrap_line(part, width) for part in text.split("\n"))


def _wrap_line(line: str, width: int) -> str:
    """Wrap one line of :func:`describe`'s text, with a hanging indent for what overflows."""
    body = line.lstrip(" ")
    indent = line[: len(line) - len(body)]
    if not body:
        return line
    # words (numbers, "x"-sizes, hyphenated names) are never split: a long word overflows
    return textwrap.fill(
        body,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent or "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def seed_offset() -> int:
    """The ``SEGTUTOR_SEED_OFFSET`` environment variable (default 0).

    See :func:`seed_everything`.
    """
    text = os.environ.get("SEGTUTOR_SEED_OFFSET", "0").strip() or "0"
    if not text.lstrip("-").isascii() or not text.lstrip("-").isdigit():
        raise ValueError(f"SEGTUTOR_SEED_OFFSET must be an integer, got {text!r}")
    return int(text)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a ``torch.Generator`` seeded too.

    Chapters call this once at the top so that a CPU run is reproducible. ``SEGTUTOR_SEED_OFFSET=k``
    in the environment adds ``k`` to every seed given here: ``benchmarks/calibrate_chapters.py``
    runs a chapter under several offsets to measure how much its results move from seed to seed.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed += seed_offset()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
