"""Kaggle's submission file: write it, read it back, score it against the masks on disk.

``submission.csv`` has the header ``id,rle_mask`` and one row per image, the mask run-length
encoded in the competition's convention (:func:`segtutor.data.rle_encode`). A file written here is
read back and every row decoded before the call returns; a file scored here must predict every
image of the split it comes from.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from segtutor.data.datasets import read_label_png
from segtutor.data.rle import rle_decode, rle_encode
from segtutor.fileio import atomic_write_text
from segtutor.metrics import tgs_map
from segtutor.tgs.layout import TGS_SIZE, TGSInputError, _require_dir

SUBMISSION_HEADER = ("id", "rle_mask")


def _as_numpy_masks(masks: Tensor | np.ndarray | Sequence, name: str) -> np.ndarray:
    arr = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W], got shape {arr.shape}")
    return arr


def write_submission(
    path: str | os.PathLike,
    ids: Sequence[str],
    masks: Tensor | np.ndarray,
) -> Path:
    """Write Kaggle's ``submission.csv`` (columns ``id,rle_mask``) atomically and validate it.

    Args:
        path: the file to write; its folder must exist.
        ids: ``N`` image ids (file stems, e.g. ``"000e218f21"``), unique.
        masks: ``[N, 101, 101]`` binary masks (bool, or 0/1 numbers) at the competition's size.

    Returns:
        The path written. The file is read back and every row decoded before this returns
        (:func:`validate_submission`), so a file that exists is a file Kaggle would parse.
    """
    arr = _as_numpy_masks(masks, "masks")
    ids = [str(i) for i in ids]
    if len(ids) != arr.shape[0]:
        raise ValueError(f"ids has {len(ids)} entries but masks has {arr.shape[0]}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("masks must be binary (0/1 or bool); threshold probabilities first")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    for image_id, mask in zip(ids, arr):
        writer.writerow((image_id, rle_encode(mask.astype(np.uint8))))
    path = Path(path)
    atomic_write_text(path, buffer.getvalue())
    validate_submission(path, expected_ids=ids, shape=tuple(arr.shape[1:]))
    return path


def validate_submission(
    path: str | os.PathLike,
    expected_ids: Iterable[str] | None = None,
    shape: tuple[int, int] = (TGS_SIZE, TGS_SIZE),
) -> dict[str, np.ndarray]:
    """Read a submission and decode every row; raise :class:`TGSInputError` on the first problem.

    Checks: the file exists and is not empty, the header is exactly ``id,rle_mask``, each row has
    two fields and a non-empty id, ids are unique, every ``rle_mask`` decodes
    (:func:`segtutor.data.rle_decode`: pairs of positive integers, runs inside the image, not
    overlapping) and, when ``expected_ids`` is given, the ids are exactly those.

    Returns:
        ``{id: mask}`` with ``mask`` a ``uint8`` array of ``shape`` in {0, 1}, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise TGSInputError(f"submission {path} does not exist or is not a file")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise TGSInputError(f"{path}: empty file; expected the header 'id,rle_mask'")
    if tuple(c.strip() for c in rows[0]) != SUBMISSION_HEADER:
        raise TGSInputError(f"{path}: header is {','.join(rows[0])!r}; expected 'id,rle_mask'")
    decoded: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise TGSInputError(f"{path} line {line}: {len(row)} fields; expected 2 (id,rle_mask)")
        image_id, rle = row[0].strip(), row[1]
        if not image_id:
            raise TGSInputError(f"{path} line {line}: empty id")
        if image_id in decoded:
            raise TGSInputError(f"{path} line {line}: id {image_id!r} appears twice")
        try:
            decoded[image_id] = np.asarray(rle_decode(rle, shape=shape), dtype=np.uint8)
        except ValueError as err:
            raise TGSInputError(
                f"{path} line {line}: malformed rle_mask for id {image_id!r}: {err}"
            ) from None
    if expected_ids is not None:
        expected = {str(i) for i in expected_ids}
        missing = sorted(expected - decoded.keys())
        extra = sorted(decoded.keys() - expected)
        if missing or extra:
            raise TGSInputError(
                f"{path}: ids differ from the expected ones "
                f"({len(missing)} missing, e.g. {missing[:3]}; "
                f"{len(extra)} unexpected, e.g. {extra[:3]})"
            )
    return decoded


def find_mask(data_dir: str | os.PathLike, image_id: str) -> Path:
    """The true-mask file of ``image_id``: ``DIR/train/masks/<id>.png``, else ``DIR/test/masks``.

    Only the synthetic set has ``test/masks``; the real competition kept its test masks secret.
    """
    root = Path(data_dir)
    for split in ("train", "test"):
        candidate = root / split / "masks" / f"{image_id}.png"
        if candidate.is_file():
            return candidate
    raise TGSInputError(
        f"no mask for id {image_id!r}: looked for {root / 'train' / 'masks' / (image_id + '.png')} "
        f"and {root / 'test' / 'masks' / (image_id + '.png')}"
    )


def split_ids(data_dir: str | os.PathLike, split: str) -> set[str]:
    """The ids of one split of a Kaggle-layout folder: the stems of ``split/images/*.png``, or of
    ``split/masks/*.png`` when there is no images folder (a folder holding only masks)."""
    root = Path(data_dir)
    for kind in ("images", "masks"):
        folder = root / split / kind
        if folder.is_dir():
            return {p.stem for p in folder.glob("*.png")}
    return set()


def _check_complete(root: Path, submission: str | os.PathLike, ids: Iterable[str]) -> None:
    """Raise TGSInputError when a submission leaves out ids of a split it predicts.

    A submission scored on part of a split would score what it left out as if it did not exist:
    leaving out the hard images raises the mean. Kaggle's checker refuses a file without every
    test id; here each split the submission has ids of (train, test) must be complete.
    """
    ids = set(ids)
    for split in ("train", "test"):
        expected = split_ids(root, split)
        if not ids & expected:
            continue
        missing = sorted(expected - ids)
        if missing:
            raise TGSInputError(
                f"{submission}: {len(missing)} of the {len(expected)} {split} ids have no row "
                f"(e.g. {', '.join(repr(i) for i in missing[:3])}); a submission must predict "
                "every image of its split"
            )


def evaluate_submission(data_dir: str | os.PathLike, submission: str | os.PathLike) -> float:
    """The TGS mAP of a submission file: every row decoded and scored against its true mask.

    Args:
        data_dir: a folder in Kaggle's layout; masks come from :func:`find_mask`.
        submission: a ``id,rle_mask`` CSV (:func:`validate_submission` checks every row).

    Returns:
        :func:`segtutor.metrics.tgs_map` over all rows of the submission (a float in [0, 1]).

    Raises:
        TGSInputError: a missing folder or file, a malformed row, an id with no mask, a mask
        whose size differs from the decoded prediction, or a split left incomplete: every image
        of each split the submission has ids of (``DIR/<split>/images``) must have a row.
    """
    root = _require_dir(Path(data_dir), "data folder")
    rows = validate_submission(submission)
    if not rows:
        raise TGSInputError(f"{submission}: no rows to score")
    _check_complete(root, submission, rows.keys())
    preds, truths = [], []
    for image_id, pred in rows.items():
        path = find_mask(root, image_id)
        try:
            truth = read_label_png(path) > 0
        except (OSError, ValueError) as err:
            raise TGSInputError(f"cannot read mask {path}: {err}") from None
        if truth.shape != pred.shape:
            raise TGSInputError(
                f"mask {path} is {truth.shape[0]}x{truth.shape[1]}; the "
                f"submission's masks are {pred.shape[0]}x{pred.shape[1]}"
            )
        preds.append(pred.astype(bool))
        truths.append(truth)
    return tgs_map(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(truths)))
