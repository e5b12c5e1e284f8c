"""The Kaggle TGS Salt Identification layout: reading it, checking it, and writing the synthetic
copy in the same shape.

The competition's files (https://www.kaggle.com/c/tgs-salt-identification-challenge/data),
unzipped into one folder ``ROOT``::

    ROOT/train.csv               id,rle_mask   (one row per training image; "" = no salt)
    ROOT/depths.csv              id,z          (depth in feet, train and test ids)
    ROOT/train/images/<id>.png   101 x 101 grey sections
    ROOT/train/masks/<id>.png    101 x 101 masks, salt > 0
    ROOT/test/images/<id>.png    the images to predict
    ROOT/sample_submission.csv   id,rle_mask   (the submission format)

:func:`write_tgs_layout` writes the synthetic set (:func:`~segtutor.data.synthetic.make_tgs_like`)
exactly like this, plus ``ROOT/test/masks/<id>.png``, which the real competition never
published: with synthetic data the test split can be scored.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segtutor import checks
from segtutor.data.constants import TGS_SIZE
from segtutor.data.datasets import PairTransform, apply_pair_transform
from segtutor.data.rle import rle_decode, rle_encode
from segtutor.data.synthetic import make_tgs_like
from segtutor.fileio import atomic_write_bytes
from segtutor.progress import bar

KAGGLE_URL = "https://www.kaggle.com/c/tgs-salt-identification-challenge/data"
NUM_COVERAGE_CLASSES = 11  # 0 = empty, then ten bins of 10 % coverage


# -------------------------------------------------------------------- coverage and folds


def _coverage_vector(masks_or_coverage: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = masks_or_coverage
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim == 3:
        return (arr > 0).reshape(arr.shape[0], -1).mean(axis=1)
    if arr.ndim == 1:
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError("a coverage vector must lie in [0, 1]")
        return arr.astype(np.float64)
    raise ValueError(f"expected masks [N, H, W] or coverages [N], got shape {arr.shape}")


def coverage_class(masks_or_coverage: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Coverage class of each image, int64 ``[N]``: 0 for an empty mask, else
    ``ceil(10 * coverage)`` in 1..10 (any salt at all is at least class 1).

    Args:
        masks_or_coverage: masks ``[N, H, W]`` (salt where > 0) or salt fractions ``[N]``.
    """
    cov = _coverage_vector(masks_or_coverage)
    # the tolerance keeps float32 coverages such as 0.1 (= 0.10000000149) in their bin
    classes = np.ceil(cov * 10 - 1e-6).astype(np.int64)
    classes[cov > 0] = np.maximum(classes[cov > 0], 1)
    return torch.from_numpy(np.clip(classes, 0, 10))


def coverage_folds(
    masks_or_coverage: torch.Tensor | np.ndarray, k: int = 5, seed: int = 0
) -> torch.Tensor:
    """Stratified k-fold assignment by coverage class: int64 ``[N]`` fold index in 0..k-1.

    Within each coverage class the images are shuffled (seeded) and dealt out to the folds in
    turn, continuing the turn from one class to the next; so every fold gets the same share of
    each class (to within one image) and the folds' sizes differ by at most one.
    Fold ``f``'s validation set is ``folds == f``.
    """
    checks.positive_int("k", k, minimum=2)
    checks.integer("seed", seed)
    classes = coverage_class(masks_or_coverage).numpy()
    if len(classes) < k:
        raise ValueError(f"cannot split {len(classes)} images into k={k} folds")
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(classes == c)) for c in range(NUM_COVERAGE_CLASSES)]
    )
    folds = np.empty(len(classes), dtype=np.int64)
    folds[order] = np.arange(len(order)) % k
    return torch.from_numpy(folds)


# --------------------------------------------------------------------------- reading


class TGSLayoutError(FileNotFoundError):
    """A folder that does not hold the Kaggle TGS layout."""


def _missing(root: Path, what: Path) -> TGSLayoutError:
    return TGSLayoutError(
        f"TGS data not found: {what} is missing. Download the competition data from {KAGGLE_URL} "
        f"and unzip it so that {root} holds train.csv, depths.csv, train/images/, train/masks/ "
        f"and test/images/; or write the synthetic copy there with "
        f"`segtutor tgs synth --out {root}` (segtutor.data.write_tgs_layout)."
    )


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if list(header[: len(columns)]) != list(columns):
            raise ValueError(f"{path}: expected the columns {list(columns)}, got {header}")
        return [{c: (row[c] or "") for c in columns} for row in reader]


def _check_ids(path: Path, ids: Sequence[str]) -> None:
    """Every id names one image: not empty, and listed once (a repeated id would be read, trained
    on and scored twice, and the rows would no longer match the images one to one)."""
    first: dict[str, int] = {}
    for line, image_id in enumerate(ids, start=2):
        if not image_id.strip():
            raise ValueError(f"{path} line {line}: empty id")
        if image_id in first:
            raise ValueError(
                f"{path} line {line}: id {image_id!r} appears twice (first on line "
                f"{first[image_id]}); every image must be listed once"
            )
        first[image_id] = line


def _read_grey(path: Path) -> np.ndarray:
    """A TGS image as uint8 ``[H, W]`` (the competition's PNGs are grey, some stored as RGB)."""
    with Image.open(path) as im:
        if im.mode.startswith("I;16") or im.mode == "I":
            return (np.asarray(im, dtype=np.float64) / 257.0).round().astype(np.uint8)
        return np.asarray(im.convert("L"), dtype=np.uint8)


def _read_mask(path: Path) -> np.ndarray:
    """A TGS mask as uint8 ``[H, W]`` in {0, 1}: salt wherever the stored value is > 0."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return (arr > 0).astype(np.uint8)


class TGSSaltDataset(Dataset):
    """One split of a folder in the Kaggle TGS layout (the real data or the synthetic copy).

    Args:
        root: the folder holding ``train.csv``, ``depths.csv``, ``train/`` and ``test/``.
        split: ``"train"`` or ``"test"``.
        transform: ``transform(image, mask) -> (image, mask)`` (see
            :mod:`segtutor.data.transforms`).
        check_rle: for the train split, decode every ``train.csv`` row and compare it with the
            mask PNG; a mismatch raises ``ValueError`` naming the id.
        progress: show a progress bar while reading.

    The split is read into memory once (uint8, about 10 kB per image). ``dataset[i]`` is
    ``(image [1, 101, 101] float32 in [0, 1], mask [101, 101] float32 in {0, 1})``. The real
    test split has no masks (``labeled`` is False): its masks are NaN, so that training on it by
    mistake fails loudly.

    Attributes: ``ids`` (list of str), ``depths`` float32 ``[N]`` (NaN where depths.csv has no
    row), ``coverage`` float32 ``[N]``, ``coverage_class`` int64 ``[N]`` (labeled splits).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: PairTransform | None = None,
        *,
        check_rle: bool = True,
        progress: bool = False,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise _missing(root, root)
        images_dir, masks_dir = root / split / "images", root / split / "masks"
        depths_csv = root / "depths.csv"
        for needed in ([root / "train.csv"] if split == "train" else []) + [depths_csv, images_dir]:
            if not needed.exists():
                raise _missing(root, needed)
        if split == "train" and not masks_dir.is_dir():
            raise _missing(root, masks_dir)

        if split == "train":
            rows = _read_csv(root / "train.csv", ("id", "rle_mask"))
            ids = [r["id"] for r in rows]
            _check_ids(root / "train.csv", ids)
            rles: dict[str, str] | None = {r["id"]: r["rle_mask"] for r in rows}
        else:
            ids = sorted(p.stem for p in images_dir.glob("*.png"))
            rles = None
        if not ids:
            raise ValueError(f"no images listed for the {split} split in {root}")
        depth_rows = _read_csv(depths_csv, ("id", "z"))
        depth_of = {r["id"]: float(r["z"]) for r in depth_rows if r["z"] != ""}

        labeled = split == "train" or masks_dir.is_dir()
        images = np.empty((len(ids), TGS_SIZE, TGS_SIZE), dtype=np.uint8)
        masks = np.zeros((len(ids), TGS_SIZE, TGS_SIZE), dtype=np.uint8) if labeled else None
        for i, image_id in enumerate(bar(ids, show=progress, desc=f"reading {split}")):
            path = images_dir / f"{image_id}.png"
            if not path.is_file():
                raise _missing(root, path)
            img = _read_grey(path)
            if img.shape != (TGS_SIZE, TGS_SIZE):
                raise ValueError(f"{path} is {img.shape[0]}x{img.shape[1]}, expected 101x101")
            images[i] = img
            if masks is not None:
                mpath = masks_dir / f"{image_id}.png"
                if not mpath.is_file():
                    raise _missing(root, mpath)
                masks[i] = _read_mask(mpath)
                if rles is not None and check_rle:
                    try:
                        decoded = rle_decode(rles[image_id], (TGS_SIZE, TGS_SIZE))
                    except ValueError as err:
                        raise ValueError(f"train.csv row {image_id!r}: {err}") from None
                    if not np.array_equal(decoded, masks[i]):
                        hint = (
                            " (it matches the transposed mask: row-major RLE?)"
                            if np.array_equal(decoded, masks[i].T)
                            else ""
                        )
                        raise ValueError(
                            f"train.csv rle_mask of {image_id!r} disagrees with {mpath}{hint}"
                        )
        self.root, self.split = root, split
        self.ids = ids
        self.labeled = labeled
        self.transform = transform
        self._images = torch.from_numpy(images)
        self._masks = None if masks is None else torch.from_numpy(masks)
        self.depths = torch.tensor([depth_of.get(i, math.nan) for i in ids], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def coverage(self) -> torch.Tensor:
        """Salt fraction per image, float32 ``[N]`` (labeled splits only)."""
        if self._masks is None:
            raise ValueError(f"the {self.split} split of {self.root} has no masks")
        return self._masks.flatten(1).float().mean(dim=1)

    @property
    def coverage_class(self) -> torch.Tensor:
        """:func:`coverage_class` of each image, int64 ``[N]``."""
        return coverage_class(self.coverage)

    def coverage_folds(self, k: int = 5, seed: int = 0) -> torch.Tensor:
        """:func:`coverage_folds` of this split: fold index ``[N]`` stratified by coverage."""
        return coverage_folds(self.coverage, k=k, seed=seed)

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list[str]]:
        """The whole split as tensors: images float32 ``[N, 1, 101, 101]`` in [0, 1], masks
        float32 ``[N, 101, 101]`` (None when unlabeled), depths ``[N]``, ids."""
        images = self._images.float().div_(255.0).unsqueeze(1)
        masks = None if self._masks is None else self._masks.float()
        return images, masks, self.depths.clone(), list(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self._images[index].float().div(255.0).unsqueeze(0)
        if self._masks is None:
            mask = torch.full((TGS_SIZE, TGS_SIZE), math.nan)
        else:
            mask = self._masks[index].float()
        return apply_pair_transform(self.transform, image, mask)


# --------------------------------------------------------------------------- writing


def write_csv_atomic(
    path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[object]]
) -> Path:
    """Write a CSV file atomically (:func:`segtutor.fileio.atomic_write`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_tgs_layout(
    root: str | os.PathLike,
    n_train: int = 4000,
    n_test: int = 1000,
    seed: int = 0,
    *,
    empty_fraction: float = 0.39,
    difficulty: float = 0.5,
    progress: bool = True,
) -> Path:
    """Write the synthetic TGS-like set in the Kaggle layout under ``root``.

    Writes ``train.csv``, ``depths.csv``, ``train/images``, ``train/masks``, ``test/images``,
    ``sample_submission.csv`` like the competition, and ``test/masks`` (which the competition
    never published) so that predictions on the test split can be scored. Images are 8-bit grey
    PNGs, masks 8-bit PNGs with 0 and 255. Every file is written atomically.

    Args:
        root: target folder (created; existing files with the same names are replaced).
        n_train, n_test: number of images in each split; the first ``n_train`` images of
            ``make_tgs_like(n_train + n_test, seed)`` are the training split.
        seed, empty_fraction, difficulty: passed to
            :func:`~segtutor.data.synthetic.make_tgs_like`.
        progress: show a tqdm progress bar.

    Returns:
        ``root`` as a ``Path``.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        checks.non_negative_int(name, value)
    if n_train + n_test == 0:
        raise ValueError("n_train + n_test must be positive")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {root} exists and is not a folder")
    data = make_tgs_like(
        n_train + n_test, seed=seed, empty_fraction=empty_fraction, difficulty=difficulty
    )
    images = (data.images.numpy() * 255.0).round().astype(np.uint8)
    masks = data.masks.numpy().astype(np.uint8)
    splits = {"train": range(n_train), "test": range(n_train, n_train + n_test)}
    for split in splits:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
    train_rows = []
    with bar(
        total=n_train + n_test, show=progress, desc=f"writing {root.name or root}", unit="img"
    ) as shown:
        for split, indices in splits.items():
            for i in indices:
                image_id = data.ids[i]
                # no fsync per image (3 ms each, 10,000 files in full mode): the set can be
                # written again; the CSV files, written last, are flushed to disk
                atomic_write_bytes(
                    root / split / "images" / f"{image_id}.png", _png_bytes(images[i]), fsync=False
                )
                atomic_write_bytes(
                    root / split / "masks" / f"{image_id}.png",
                    _png_bytes(masks[i] * 255),
                    fsync=False,
                )
                if split == "train":
                    train_rows.append((image_id, rle_encode(masks[i])))
                shown.update(1)
    write_csv_atomic(root / "train.csv", ("id", "rle_mask"), train_rows)
    depth_rows = [(data.ids[i], int(data.depths[i])) for i in range(n_train + n_test)]
    write_csv_atomic(root / "depths.csv", ("id", "z"), depth_rows)
    # Kaggle's sample submission marks one pixel per image: a valid run, nothing meaningful
    write_csv_atomic(
        root / "sample_submission.csv",
        ("id", "rle_mask"),
        [(data.ids[i], "1 1") for i in splits["test"]],
    )
    return root
