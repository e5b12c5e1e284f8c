"""Run-length encoding in the Kaggle TGS Salt convention.

A mask is read **column by column** (top to bottom, then left to right: Fortran / column-major
order), pixels are numbered from **1**, and each run of foreground pixels is written as the pair
``"start length"``. Pairs are separated by spaces; the empty mask is the empty string.

For a 3 x 3 mask, the pixel numbers are::

    1 4 7
    2 5 8
    3 6 9

so the first column alone is ``"1 3"`` and the first row alone is ``"1 1 4 1 7 1"``.

Both directions are vectorised with NumPy: a ``diff`` finds where runs start and stop, and a
cumulative sum of +1/-1 markers paints them back.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

# [0-9], not \d: in Python \d (like str.isdigit and int()) also takes other scripts' digits
_INT_TOKEN = re.compile(r"[0-9]+")


def _shorten(token: str, keep: int = 20) -> str:
    """A token for an error message: a malformed string can be megabytes long."""
    return token if len(token) <= keep else f"{token[:keep]}... ({len(token)} characters)"


def _as_binary_array(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array or a torch tensor, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if not np.isin(mask, (0, 1)).all():
        bad = np.unique(mask[~np.isin(mask, (0, 1))])[:5]
        raise ValueError(f"mask must hold only 0 and 1 (or be bool), found values {bad.tolist()}")
    return mask.astype(bool)


def rle_encode(mask: np.ndarray | torch.Tensor) -> str:
    """Encode a binary mask ``[H, W]`` as a Kaggle TGS run-length string.

    Args:
        mask: bool or {0, 1} array/tensor ``[H, W]``.

    Returns:
        ``"start length start length ..."`` with 1-based, column-major starts; ``""`` for an
        empty mask.
    """
    pixels = _as_binary_array(mask).flatten(order="F").astype(np.int8)
    padded = np.concatenate([[0], pixels, [0]])
    changes = np.flatnonzero(np.diff(padded))  # 0-based index where a run starts or stops
    starts, stops = changes[0::2], changes[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2] = starts + 1
    runs[1::2] = stops - starts
    return " ".join(map(str, runs.tolist()))


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(shape):
        raise ValueError(f"shape must be two positive ints (height, width), got {shape!r}")
    return height, width


def rle_decode(rle: str | None, shape: tuple[int, int] = (101, 101)) -> np.ndarray:
    """Decode a Kaggle TGS run-length string into a uint8 mask ``[H, W]`` of 0 and 1.

    Args:
        rle: ``"start length ..."`` (1-based, column-major). ``""``, whitespace, ``None`` or a
            float NaN (what pandas reads for an empty cell of train.csv) mean the empty mask.
        shape: ``(height, width)`` of the mask; TGS images are 101 x 101.

    Raises:
        ValueError: an odd number of tokens, a token that is not a run of ASCII digits ``0-9``
            (signs, decimal points and other scripts' digits such as full-width ``１`` are
            refused), a start below 1 or past the last pixel, a length below 1, a run past the
            last pixel, or runs that overlap. Touching or unsorted runs are accepted.
    """
    height, width = _check_shape(shape)
    total = height * width
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        return np.zeros((height, width), dtype=np.uint8)
    if not isinstance(rle, str):
        raise TypeError(f"rle must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if not tokens:
        return np.zeros((height, width), dtype=np.uint8)
    if len(tokens) % 2:
        raise ValueError(
            f"rle must hold 'start length' pairs, got an odd number of tokens ({len(tokens)})"
        )
    bad = [_shorten(t) for t in tokens if not _INT_TOKEN.fullmatch(t)]
    if bad:
        raise ValueError(
            f"rle tokens must be non-negative integers of ASCII digits 0-9, got {bad[:5]}"
        )
    # every number is bounded by the pixel count before it is converted or added, so no token
    # can overflow int64 (or reach Python's limit on int() of a very long digit string)
    limit = len(str(total))
    values = []
    for i, token in enumerate(tokens):
        digits = (token.lstrip("0") or "0") if len(token) > limit else token
        value = int(digits) if len(digits) <= limit else total + 1
        if value > total:
            run, mask = f"rle run {i // 2 + 1}", f"a {height}x{width} mask"
            if i % 2 == 0:
                raise ValueError(
                    f"{run} starts at pixel {_shorten(token)}, past the last pixel "
                    f"{total} of {mask}"
                )
            raise ValueError(
                f"{run} has length {_shorten(token)}, longer than the {total} pixels of {mask}"
            )
        values.append(value)
    runs = np.array(values, dtype=np.int64).reshape(-1, 2)
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts < 1).any():
        raise ValueError(f"rle starts are 1-based, got start {int(starts.min())}")
    if (lengths < 1).any():
        raise ValueError(f"rle lengths must be positive, got length {int(lengths.min())}")
    ends = starts - 1 + lengths  # one past the run's last 0-based pixel; <= 2 * total
    if (ends > total).any():
        i = int(np.argmax(ends > total))
        raise ValueError(
            f"rle run '{starts[i]} {lengths[i]}' ends at pixel {ends[i]}, past the "
            f"last pixel {total} of a {height}x{width} mask"
        )
    order = np.argsort(starts, kind="stable")
    s_sorted, e_sorted = starts[order] - 1, ends[order]
    overlap = s_sorted[1:] < e_sorted[:-1]
    if overlap.any():
        i = int(np.argmax(overlap))
        raise ValueError(
            f"rle runs overlap: the run starting at {s_sorted[i] + 1} ends after "
            f"the run starting at {s_sorted[i + 1] + 1} begins"
        )
    marks = np.zeros(total + 1, dtype=np.int32)
    np.add.at(marks, s_sorted, 1)
    np.add.at(marks, e_sorted, -1)
    flat = np.cumsum(marks[:total]) > 0
    return flat.reshape((height, width), order="F").astype(np.uint8)
