"""The competition's data as the workflow sees it: one split in memory, folds, 101 <-> 128.

The folder layout itself (reading, checking, writing the synthetic copy) belongs to
:mod:`segtutor.data.tgs`; this module adds only what the workflow needs on top: the refusal of a
non-empty output folder, the split as one named tuple, the error type the command line prints on
one line, and the two size mappings between the competition's 101x101 and the network's 128x128.
(Folds and coverage classes are :func:`segtutor.data.coverage_folds` and
:func:`segtutor.data.coverage_class`, which :mod:`segtutor.tgs` also offers as ``make_folds`` and
``coverage_classes``.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from segtutor.data import transforms
from segtutor.data.constants import MODEL_SIZE, TGS_SIZE
from segtutor.data.tgs import TGSSaltDataset, write_tgs_layout


class TGSInputError(ValueError):
    """Bad input to the workflow (a path, a file, a submission): the CLI prints it on one line."""


def _require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when it is an existing folder; else TGSInputError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise TGSInputError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise TGSInputError(f"{what} {path} is not a folder")
    return path


class TGSArrays(NamedTuple):
    """One split of a TGS folder in memory.

    ``images`` float32 ``[N, 1, 101, 101]`` in [0, 1]; ``masks`` float32 ``[N, 101, 101]`` in
    {0, 1} or None (the real test split); ``depths`` float32 ``[N]``; ``ids`` N strings.
    """

    ids: list[str]
    images: Tensor
    masks: Tensor | None
    depths: Tensor


def synth(
    out: str | os.PathLike,
    n: int = 4000,
    n_test: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the synthetic TGS-like set (``n`` train, ``n_test`` test images) in Kaggle's layout.

    :func:`segtutor.data.write_tgs_layout` into a new or empty folder (an existing data set is
    never overwritten); ``n_test`` defaults to ``n // 4``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TGSInputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise TGSInputError(f"--out {out} is not empty; choose a new folder")
    n_test = max(n // 4, 1) if n_test is None else n_test
    write_tgs_layout(out, n_train=n, n_test=n_test, seed=seed, progress=progress)
    return out


def load_split(root: str | os.PathLike, split: str = "train", progress: bool = False) -> TGSArrays:
    """Read one split of a Kaggle-layout folder into memory (:class:`segtutor.data.TGSSaltDataset`).

    Returns :class:`TGSArrays`; a folder without the layout raises an error that names the
    missing file and where the Kaggle data go.
    """
    dataset = TGSSaltDataset(root, split, progress=progress)
    images, masks, depths, ids = dataset.arrays()
    return TGSArrays(ids, images, masks, depths)


def to_model_size(x: Tensor, mode: str = "pad", mask: bool = False) -> Tensor:
    """``[..., 101, 101]`` -> ``[..., 128, 128]``: reflect-pad or resize (masks: nearest).

    Thin over :func:`segtutor.data.transforms.pad_to_128` / ``resize_to``.
    """
    if mode == "pad":
        return transforms.pad_to_128(x)
    if mode == "resize":
        return transforms.resize_to(x, MODEL_SIZE, mask=mask)
    raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")


def from_model_size(x: Tensor, mode: str = "pad") -> Tensor:
    """The inverse of :func:`to_model_size` for predictions ``[..., 128, 128] -> [..., 101, 101]``:
    the centre crop (exact) or a bilinear resize of probabilities."""
    if mode == "pad":
        return transforms.unpad_from_128(x)
    if mode == "resize":
        return transforms.resize_to(x, TGS_SIZE)
    raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")
