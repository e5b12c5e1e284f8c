"""The TGS Salt Identification workflow, end to end, as thin glue over the package.

Every step calls the tested building blocks of ``segtutor``: the Kaggle layout and RLE from
:mod:`segtutor.data`, the metric from :mod:`segtutor.metrics`, the losses from
:mod:`segtutor.losses`, the ResNet34 U-Net from :mod:`segtutor.models`, the trainer, schedules and
snapshot ensemble from :mod:`segtutor.train`, flip TTA from :mod:`segtutor.train.tta` and
small-component removal from :mod:`segtutor.postprocess`. What lives here is only what is
specific to the competition: the two-stage recipe, the out-of-fold threshold search, the
empty-image rule and the submission file.

The command line (``segtutor tgs synth|train|predict|evaluate``, :mod:`segtutor.cli`) calls the
functions of this module and nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from segtutor.fileio import atomic_write_text, check_target

#: The image size of the competition, and the size the network sees (a multiple of 32).
TGS_SIZE = 101
MODEL_SIZE = 128

SUBMISSION_HEADER = ("id", "rle_mask")


class TGSInputError(ValueError):
    """Bad input to the workflow (a path, a file, a submission): the CLI prints it on one line."""


# --------------------------------------------------------------------------------------------
# Files written atomically
# --------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`segtutor.fileio.atomic_write_text`).

    A crash half-way leaves the previous file (or none) in place, never a truncated one: a
    submission that is half written would otherwise look valid up to its last complete row.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise TGSInputError(f"cannot write {path}: folder {path.parent} does not exist")
    atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# Submission: write, read back, validate
# --------------------------------------------------------------------------------------------


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
    from segtutor.data import rle_encode

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
    _atomic_write_text(path, buffer.getvalue())
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
    from segtutor.data import rle_decode

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
                f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]})"
            )
    return decoded


# --------------------------------------------------------------------------------------------
# Threshold search and post-processing
# --------------------------------------------------------------------------------------------


class ThresholdSearch(NamedTuple):
    """Result of :func:`search_threshold`: the best threshold, its score, and the whole curve."""

    threshold: float
    score: float
    thresholds: list[float]
    scores: list[float]


def default_thresholds() -> list[float]:
    """The grid searched by default: 0.20, 0.25, ..., 0.80 (probabilities)."""
    return [round(0.20 + 0.05 * i, 2) for i in range(13)]


def search_threshold(
    probs: Tensor,
    masks: Tensor,
    thresholds: Sequence[float] | None = None,
    metric: Callable[[Tensor, Tensor], float] | None = None,
    postprocess: Callable[[Tensor], Tensor] | None = None,
) -> ThresholdSearch:
    """Pick the probability threshold that maximises the metric on out-of-fold predictions.

    Args:
        probs: ``[N, H, W]`` predicted salt probabilities in [0, 1] of images the models did
            *not* train on (out-of-fold), so that the choice is not tuned on training data.
        masks: ``[N, H, W]`` true masks in {0, 1}.
        thresholds: candidates; a pixel is salt when ``prob > threshold``. Default
            :func:`default_thresholds`.
        metric: ``metric(pred_masks, true_masks) -> float``, higher is better; default the
            competition's :func:`segtutor.metrics.tgs_map`.
        postprocess: optional ``[N,H,W] bool -> [N,H,W] bool`` applied after thresholding
            (e.g. small-component removal), so the threshold is chosen for the final masks.

    Returns:
        :class:`ThresholdSearch`; ties go to the threshold nearest 0.5 (the unbiased default).
    """
    if metric is None:
        from segtutor.metrics import tgs_map as metric
    probs = torch.as_tensor(probs)
    masks = torch.as_tensor(masks)
    if probs.dim() != 3 or probs.shape != masks.shape:
        raise ValueError(
            f"probs and masks must both be [N, H, W] of the same shape, got "
            f"{tuple(probs.shape)} and {tuple(masks.shape)}"
        )
    grid = default_thresholds() if thresholds is None else [float(t) for t in thresholds]
    if not grid:
        raise ValueError("thresholds must not be empty")
    truth = masks > 0.5
    scores = []
    for t in grid:
        pred = probs > t
        if postprocess is not None:
            pred = postprocess(pred)
        scores.append(float(metric(pred, truth)))
    best = max(range(len(grid)), key=lambda i: (scores[i], -abs(grid[i] - 0.5)))
    return ThresholdSearch(grid[best], scores[best], grid, scores)


def _check_probability(value: Any, name: str) -> None:
    # `prob > nan` is False everywhere: a NaN threshold would silently give empty masks
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def suppress_empty(masks: Tensor, salt_prob: Tensor | None, empty_threshold: float = 0.5) -> Tensor:
    """Blank the masks of images that the image-level classifier calls empty.

    Args:
        masks: ``[N, H, W]`` bool predicted masks.
        salt_prob: ``[N]`` probability that each image contains salt (the empty/non-empty
            classification head after a sigmoid); ``None`` leaves the masks unchanged.
        empty_threshold: images with ``salt_prob < empty_threshold`` get an empty mask.

    In this competition an empty image predicted with even one salt pixel scores 0 instead of 1,
    and about 39% of the real training images are empty, so a good image-level decision is worth
    more than any boundary refinement.
    """
    _check_probability(empty_threshold, "empty_threshold")
    if salt_prob is None:
        return masks
    salt_prob = torch.as_tensor(salt_prob, device=masks.device).reshape(-1)
    if salt_prob.numel() != masks.shape[0]:
        raise ValueError(f"salt_prob has {salt_prob.numel()} values for {masks.shape[0]} masks")
    keep = (salt_prob >= empty_threshold).view(-1, 1, 1)
    return masks & keep


def remove_small(masks: Tensor, min_size: int) -> Tensor:
    """Remove predicted connected components smaller than ``min_size`` pixels from each mask.

    ``masks`` is ``[N, H, W]`` bool; delegates to :func:`segtutor.postprocess.remove_small_objects`.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"min_size must be an int >= 0 (pixels), got {min_size!r}")
    if min_size == 0:
        return masks
    from segtutor.postprocess import remove_small_objects

    return remove_small_objects(masks.bool(), int(min_size))


def postprocess(
    probs: Tensor,
    threshold: float = 0.5,
    min_size: int = 0,
    salt_prob: Tensor | None = None,
    empty_threshold: float = 0.5,
) -> Tensor:
    """Probabilities ``[N, H, W]`` -> final bool masks ``[N, H, W]``.

    Threshold (``prob > threshold``), drop components under ``min_size`` pixels, then blank
    images the classifier head calls empty (:func:`suppress_empty`).
    """
    _check_probability(threshold, "threshold")
    probs = torch.as_tensor(probs)
    if probs.dim() != 3:
        raise ValueError(f"probs must be [N, H, W], got {tuple(probs.shape)}")
    masks = remove_small(probs > threshold, min_size)
    return suppress_empty(masks, salt_prob, empty_threshold)


# --------------------------------------------------------------------------------------------
# Scoring a submission against the masks on disk
# --------------------------------------------------------------------------------------------


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise TGSInputError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise TGSInputError(f"{what} {path} is not a folder")
    return path


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
                "every image of its split")


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
    from segtutor.data import read_label_png
    from segtutor.metrics import tgs_map

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
            raise TGSInputError(f"mask {path} is {truth.shape[0]}x{truth.shape[1]}; the "
                                f"submission's masks are {pred.shape[0]}x{pred.shape[1]}")
        preds.append(pred.astype(bool))
        truths.append(truth)
    return tgs_map(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(truths)))


# --------------------------------------------------------------------------------------------
# Data: the Kaggle layout in memory, 101 <-> 128
# --------------------------------------------------------------------------------------------


class TGSArrays(NamedTuple):
    """One split of a TGS folder in memory.

    ``images`` float32 ``[N, 1, 101, 101]`` in [0, 1]; ``masks`` float32 ``[N, 101, 101]`` in
    {0, 1} or None (the real test split); ``depths`` float32 ``[N]``; ``ids`` N strings.
    """

    ids: list[str]
    images: Tensor
    masks: Tensor | None
    depths: Tensor


def synth(out: str | os.PathLike, n: int = 4000, n_test: int | None = None, seed: int = 0,
          progress: bool = True) -> Path:
    """Write the synthetic TGS-like set (``n`` train, ``n_test`` test images) in Kaggle's layout.

    Thin over :func:`segtutor.data.write_tgs_layout`; ``n_test`` defaults to ``n // 4``.
    """
    from segtutor.data import write_tgs_layout

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
    from segtutor.data import TGSSaltDataset

    dataset = TGSSaltDataset(root, split, progress=progress)
    images, masks, depths, ids = dataset.arrays()
    return TGSArrays(ids, images, masks, depths)


def coverage_classes(masks: Tensor) -> Tensor:
    """Coverage class ``[N]`` of masks ``[N, H, W]``: 0 empty, 1..10 by tenths of salt
    (:func:`segtutor.data.coverage_class`)."""
    from segtutor.data import coverage_class

    return coverage_class(masks)


def make_folds(masks: Tensor, k: int = 5, seed: int = 0) -> Tensor:
    """Fold index ``[N]`` in ``0..k-1``, stratified by coverage class
    (:func:`segtutor.data.coverage_folds`); fold ``f`` validates on ``folds == f``."""
    from segtutor.data import coverage_folds

    return coverage_folds(masks, k=k, seed=seed)


# --------------------------------------------------------------------------------------------
# Training: options, the trainer with the empty-image head, one fold, all folds
# --------------------------------------------------------------------------------------------


@dataclass
class TrainOptions:
    """Every choice of the training recipe; ``None`` means "the quick/full default" (:meth:`resolved`).

    Recipe switches (``scse``, ``hypercolumn``, ``deep_supervision``, ``classify``, ``augment``)
    exist so that the ablation chapter can turn the techniques off one at a time.
    """

    folds: int = 5
    train_folds: list[int] | None = None
    model: str = "resunet34"
    width: float | None = None
    pretrained: bool = False
    size_mode: str = "pad"
    stage1_loss: str = "bce"
    stage1_epochs: int | None = None
    lovasz: str = "elu"
    cycles: int | None = None
    cycle_epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    n_images: int | None = None
    seed: int = 0
    amp: bool = True
    gpu_data: bool = True
    tensorboard: str | None = None
    visdom: int | None = None
    progress: bool = True
    verbose: bool = True
    scse: bool = True
    hypercolumn: bool = True
    deep_supervision: bool = True
    classify: bool = True
    augment: bool = True
    aux_weight: float = 0.2
    cls_weight: float = 0.05

    @classmethod
    def from_namespace(cls, args: Any) -> TrainOptions:
        """Options from the ``segtutor tgs train`` arguments (see :mod:`segtutor.cli`)."""
        return cls(
            folds=args.folds, train_folds=args.train_folds, model=args.model, width=args.width,
            pretrained=args.pretrained, size_mode=args.size_mode, stage1_loss=args.stage1_loss,
            stage1_epochs=args.stage1_epochs, lovasz=args.lovasz, cycles=args.cycles,
            cycle_epochs=args.cycle_epochs, lr=args.lr, batch_size=args.batch_size,
            n_images=args.n_images, seed=args.seed, amp=not args.no_amp,
            gpu_data=not args.no_gpu_data,
            tensorboard=str(args.tensorboard) if args.tensorboard else None,
            visdom=args.visdom, progress=not args.no_progress,
        )

    def resolved(self) -> TrainOptions:
        """A copy with every ``None`` size filled from quick mode or full mode."""
        from segtutor import config

        opts = replace(self)
        opts.stage1_epochs = config.pick(2, 30) if self.stage1_epochs is None else self.stage1_epochs
        opts.cycles = config.pick(1, 4) if self.cycles is None else self.cycles
        opts.cycle_epochs = config.pick(1, 20) if self.cycle_epochs is None else self.cycle_epochs
        opts.lr = 1e-3 if self.lr is None else float(self.lr)
        opts.batch_size = config.pick(16, 32) if self.batch_size is None else self.batch_size
        opts.width = config.pick(0.125, 1.0) if self.width is None else float(self.width)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise ValueError naming the option that is out of range (``None`` sizes pass: they
        are the quick/full defaults, checked again after :meth:`resolved`)."""
        for name, low in (("folds", 1), ("stage1_epochs", 0), ("cycles", 0), ("cycle_epochs", 1),
                          ("batch_size", 1), ("n_images", 1), ("seed", 0), ("visdom", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.visdom is not None and self.visdom > 65535:
            raise ValueError(f"visdom must be a TCP port in [1, 65535], got {self.visdom}")
        for name in ("lr", "width", "aux_weight", "cls_weight"):
            value = getattr(self, name)
            if value is None and name in ("lr", "width"):
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0
                    or (value == 0 and name in ("lr", "width"))):
                sign = "> 0" if name in ("lr", "width") else ">= 0"
                raise ValueError(f"{name} must be a finite number {sign}, got {value!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (one fold is held out), got {self.folds}")
        if self.train_folds is not None:
            bad = [f for f in self.train_folds if not 0 <= f < self.folds]
            if bad:
                raise ValueError(f"train_folds {bad} out of range 0..{self.folds - 1}")
        if self.model not in ("resunet34", "unet"):
            raise ValueError(f"model must be 'resunet34' or 'unet', got {self.model!r}")
        if self.size_mode not in ("pad", "resize"):
            raise ValueError(f"size_mode must be 'pad' or 'resize', got {self.size_mode!r}")
        if self.stage1_loss not in ("bce", "bce_dice"):
            raise ValueError(f"stage1_loss must be 'bce' or 'bce_dice', got {self.stage1_loss!r}")
        if self.lovasz not in ("hinge", "elu"):
            raise ValueError(f"lovasz must be 'hinge' or 'elu', got {self.lovasz!r}")
        if (self.stage1_epochs or 0) + (self.cycles or 0) * (self.cycle_epochs or 0) < 1:
            raise ValueError("nothing to train: stage1_epochs and cycles are both 0")

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`segtutor.models.build_model` (without the name).

        ``width`` is a channel multiplier, 1 = the published widths: the ResNet34 encoder's
        channels and a 64-channel decoder for ``resunet34``, ``base_width=64`` for ``unet``.
        """
        width = 1.0 if self.width is None else float(self.width)
        kwargs: dict[str, Any] = {"num_classes": 1, "in_channels": 1,
                                  "pretrained": self.pretrained}
        if self.model == "resunet34":
            kwargs.update(encoder_width=width, decoder_width=max(4, round(64 * width)),
                          attention=self.scse, hypercolumn=self.hypercolumn,
                          deep_supervision=self.deep_supervision, classify=self.classify)
        elif self.model == "unet":
            kwargs.update(base_width=max(2, round(64 * width)))
        return kwargs


def has_salt(masks: Tensor) -> Tensor:
    """``[B, H, W]`` masks -> ``[B]`` float: 1 where the image contains any salt pixel."""
    return (masks.flatten(1) > 0.5).any(dim=1).float()


_TRAINER_CLASS: type | None = None


def tgs_trainer_class() -> type:
    """:class:`segtutor.train.Trainer` plus the empty-image classification loss.

    The ResNet34 U-Net with ``classify=True`` returns ``{"out", "aux", "cls"}`` in training mode;
    the base trainer scores ``out`` (criterion) and ``aux`` (deep supervision). This subclass adds
    ``cls_weight * BCE(cls, has_salt(mask))``, the image-level target being "the mask is not
    empty". Built on first use so that importing :mod:`segtutor.tgs` stays cheap.
    """
    global _TRAINER_CLASS
    if _TRAINER_CLASS is None:
        import torch.nn.functional as F

        from segtutor.train import Trainer

        class TGSTrainer(Trainer):
            cls_weight: float = 0.05
            handled_outputs = ("out", "aux", "cls")

            def compute_loss(self, output: Any, target: Tensor) -> tuple[Tensor, Tensor]:
                loss, logits = super().compute_loss(output, target)
                if isinstance(output, Mapping) and output.get("cls") is not None and self.cls_weight:
                    cls_logit = output["cls"].reshape(-1).float()
                    loss = loss + self.cls_weight * F.binary_cross_entropy_with_logits(
                        cls_logit, has_salt(target))
                return loss, logits

        _TRAINER_CLASS = TGSTrainer
    return _TRAINER_CLASS


def _stage1_criterion(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    from segtutor import losses

    return losses.BCEWithLogitsLoss() if name == "bce" else losses.BCEDiceLoss()


def _stage2_criterion(variant: str) -> Callable[[Tensor, Tensor], Tensor]:
    from segtutor import losses

    return losses.LovaszHingeLoss(activation="elu+1" if variant == "elu" else "relu")


def _make_logger(opts: TrainOptions, name: str, run_dir: Path) -> Any:
    """TensorBoard and/or visdom loggers as asked for; None when neither is.

    TensorBoard event files go to ``<tensorboard>/<name>``. visdom posts live to the server on
    127.0.0.1:``visdom`` when one answers, and always keeps its message log in
    ``run_dir/visdom/<name>.jsonl`` (replayable with :func:`segtutor.monitor.replay`).
    """
    from segtutor import monitor

    loggers = []
    if opts.tensorboard:
        loggers.append(monitor.TensorBoardLogger(Path(opts.tensorboard) / name))
    if opts.visdom:
        loggers.append(monitor.VisdomLogger(env=name.replace("/", "_"), port=opts.visdom,
                                            log_file=run_dir / "visdom" / f"{name}.jsonl"))
    if not loggers:
        return None
    return loggers[0] if len(loggers) == 1 else monitor.MultiLogger(loggers)


def to_model_size(x: Tensor, mode: str = "pad", mask: bool = False) -> Tensor:
    """``[..., 101, 101]`` -> ``[..., 128, 128]``: reflect-pad or resize (masks: nearest).

    Thin over :func:`segtutor.data.transforms.pad_to_128` / ``resize_to``.
    """
    from segtutor.data import transforms

    if mode == "pad":
        return transforms.pad_to_128(x)
    if mode == "resize":
        return transforms.resize_to(x, MODEL_SIZE, mask=mask)
    raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")


def from_model_size(x: Tensor, mode: str = "pad") -> Tensor:
    """The inverse of :func:`to_model_size` for predictions ``[..., 128, 128] -> [..., 101, 101]``:
    the centre crop (exact) or a bilinear resize of probabilities."""
    from segtutor.data import transforms

    if mode == "pad":
        return transforms.unpad_from_128(x)
    if mode == "resize":
        return transforms.resize_to(x, TGS_SIZE)
    raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")


def _augment_fn(device: torch.device, seed: int) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Batch augmentation of the recipe on ``device``: random left-right flips (salt on the left
    looks like salt on the right; up-down is *not* symmetric in a seismic section) and lighting."""
    from segtutor.data import transforms

    gen = torch.Generator(device=device).manual_seed(seed)

    def augment(images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        images, masks = transforms.batch_random_flip(images, masks, hflip=0.5, generator=gen)
        images = transforms.batch_lighting(images, brightness=0.1, contrast=0.1, generator=gen)
        return images, masks

    return augment


def _loader(images: Tensor, masks: Tensor, opts: TrainOptions, shuffle: bool, seed: int) -> Any:
    """Batches of ``(images [B,1,128,128], masks [B,128,128])``.

    On CUDA with ``gpu_data`` (and always on the CPU) the tensors stay where the model is and are
    sliced into batches there (:class:`segtutor.train.trainer.DeviceLoader`), with the batch
    augmentation on the same device; otherwise a seeded DataLoader with per-sample transforms.
    """
    from segtutor import config
    from segtutor.train.trainer import DeviceLoader

    device = config.device()
    if device.type != "cuda" or opts.gpu_data:
        augment = _augment_fn(device, seed) if (shuffle and opts.augment) else None
        return DeviceLoader(images, masks, opts.batch_size, shuffle=shuffle, seed=seed,
                            device=device, augment=augment)
    from segtutor.data import InMemoryDataset, make_loader
    from segtutor.data.transforms import make_augmentation

    transform = (make_augmentation(hflip=0.5, brightness=0.1, contrast=0.1)
                 if (shuffle and opts.augment) else None)
    return make_loader(InMemoryDataset(images, masks, transform=transform), opts.batch_size,
                       shuffle=shuffle, seed=seed, num_workers=2)


def build(opts: TrainOptions) -> torch.nn.Module:
    """The model of the recipe: :func:`segtutor.models.build_model` with :meth:`TrainOptions.model_kwargs`."""
    from segtutor.models import build_model

    return build_model(opts.model, **opts.model_kwargs())


def _model_outputs(model: torch.nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Eval-mode outputs as a dict: ``"out"`` logits ``[B,1,H,W]`` and, for a model with the
    empty-image head, ``"cls"`` logits ``[B,1]``.

    In eval mode the models return only the segmentation logits; the ResNet34 U-Net returns
    its empty-image logit too when asked (``return_cls=True``), from the same forward pass.
    """
    from segtutor.models.resunet import ResUNet34

    # DeepLab and PSPNet have a `classifier` too (their segmentation head): ask the type
    if not isinstance(model, ResUNet34) or model.classifier is None:
        out = model(images)
        return {"out": out["out"] if isinstance(out, Mapping) else out}
    out = model(images, return_cls=True)
    return {"out": out["out"], "cls": out["cls"].reshape(-1, 1)}


@torch.no_grad()
def predict_probs(
    members: Sequence[torch.nn.Module],
    images: Tensor,
    size_mode: str = "pad",
    tta: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Average salt probabilities of several models (snapshots, folds) with optional flip TTA.

    Args:
        members: models (eval mode is set here); each gets the same weight, so snapshot and
            fold ensembling are both plain means of probabilities.
        images: ``[N, 1, 128, 128]`` inputs at the model size (see :func:`to_model_size`).
        size_mode: how they were made, to map the probabilities back to 101x101.
        tta: horizontal-flip TTA (:func:`segtutor.train.tta.hflip_tta`).

    Returns:
        ``probs`` float32 ``[N, 101, 101]`` on the CPU and ``salt_prob`` ``[N]`` (the empty-image
        head's probability that the image has salt) or None for models without that head.
    """
    from segtutor import config
    from segtutor.train.tta import tta_predict

    if not members:
        raise ValueError("members must contain at least one model")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = config.device()
    transforms_ = ("identity", "hflip") if tta else ("identity",)
    probs = torch.zeros(images.shape[0], TGS_SIZE, TGS_SIZE)
    salt: Tensor | None = torch.zeros(images.shape[0])
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"predict ({len(members)} models, tta={tta})", leave=False)
    for model in members:
        model.to(device).eval()
    for start in starts:
        x = images[start:start + batch_size].to(device)
        batch_probs, batch_salt = 0.0, 0.0
        for model in members:
            out = tta_predict(lambda t, m=model: _model_outputs(m, t), x, transforms_)
            batch_probs = batch_probs + out["out"][:, 0].float()
            if salt is not None and "cls" in out:
                batch_salt = batch_salt + out["cls"][:, 0].float()
            else:
                salt = None
        probs[start:start + x.shape[0]] = from_model_size(batch_probs / len(members), size_mode).cpu()
        if salt is not None:
            salt[start:start + x.shape[0]] = (batch_salt / len(members)).cpu()
    return probs, salt


def fit_fold(
    opts: TrainOptions,
    train_xy: tuple[Tensor, Tensor],
    val_xy: tuple[Tensor, Tensor],
    fold_dir: str | os.PathLike,
    name: str = "fold0",
    init_state: Mapping[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Train one fold: stage 1 (BCE or BCE+Dice), then stage 2 (Lovász hinge) under cosine
    annealing with warm restarts, one snapshot per cycle.

    Args:
        opts: resolved :class:`TrainOptions`.
        train_xy, val_xy: ``(images [N,1,128,128], masks [N,128,128])`` at the model size.
        fold_dir: where ``snapshot_<k>.pt`` files go (one per stage-2 cycle; the stage-1 weights
            as ``snapshot_1.pt`` when there is no stage 2).
        name: the run name for the loggers.
        init_state: start from these weights instead of a fresh model (the ablation chapter
            continues a stage-1 model with stage 2).

    Returns:
        ``{"history": [rows], "snapshots": [paths], "model": the trained module}``; each history
        row is a Trainer row plus ``"stage"`` (1 or 2).
    """
    from segtutor.train import checkpoint, schedules

    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    model = build(opts)
    if init_state is not None:
        model.load_state_dict(init_state)
    train_loader = _loader(*train_xy, opts, shuffle=True, seed=opts.seed)
    val_loader = _loader(*val_xy, opts, shuffle=False, seed=opts.seed)
    steps = len(train_loader)
    Trainer = tgs_trainer_class()
    common = {"num_classes": 1, "val_loader": val_loader,
              "amp": "auto" if opts.amp else False, "aux_weight": opts.aux_weight,
              "monitor": "val_tgs_map", "mode": "max", "progress": opts.progress,
              "verbose": opts.verbose}
    history: list[dict[str, Any]] = []
    trainer = None
    if opts.stage1_epochs:
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
        # one cosine cycle over the whole stage: plain cosine annealing
        scheduler = schedules.cosine_warm_restarts(optimizer, opts.stage1_epochs * steps,
                                                   min_lr=opts.lr * 0.05)
        # each stage logs under its own name: both count their epochs from 1
        logger = _make_logger(opts, f"{name}/stage1", fold_dir.parent)
        trainer = Trainer(model, _stage1_criterion(opts.stage1_loss), optimizer, train_loader,
                          scheduler=scheduler, scheduler_interval="step", logger=logger, **common)
        trainer.cls_weight = opts.cls_weight if opts.classify else 0.0
        history += [dict(row, stage=1) for row in trainer.fit(opts.stage1_epochs)]
        if logger is not None:
            logger.close()
    snapshots: list[Path] = []
    if opts.cycles:
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
        scheduler = schedules.cosine_warm_restarts(optimizer, opts.cycle_epochs * steps,
                                                   min_lr=opts.lr * 0.01)
        saver = schedules.SnapshotSaver(opts.cycle_epochs, directory=fold_dir)
        logger = _make_logger(opts, f"{name}/stage2", fold_dir.parent)
        trainer = Trainer(model, _stage2_criterion(opts.lovasz), optimizer, train_loader,
                          scheduler=scheduler, scheduler_interval="step", callbacks=[saver],
                          logger=logger, **common)
        trainer.cls_weight = opts.cls_weight if opts.classify else 0.0
        offset = len(history)
        rows = trainer.fit(opts.cycles * opts.cycle_epochs)
        if logger is not None:
            logger.close()
        history += [dict(row, stage=2, epoch=row["epoch"] + offset) for row in rows]
        snapshots = list(saver.paths)
    else:
        state = {k: v.detach().cpu() for k, v in checkpoint.unwrap(trainer.module).state_dict().items()}
        snapshots = [checkpoint.atomic_save({"model": state}, fold_dir / "snapshot_1.pt")]
    return {"history": history, "snapshots": snapshots, "model": checkpoint.unwrap(trainer.module)}


def load_members(opts: TrainOptions, paths: Sequence[str | os.PathLike]) -> list[torch.nn.Module]:
    """Models rebuilt from snapshot files (``torch.load(weights_only=True)``), in eval mode."""
    from segtutor.train.checkpoint import load_checkpoint

    members = []
    for path in paths:
        state = load_checkpoint(path)  # names the file when it is damaged
        model = build(opts)
        try:
            model.load_state_dict(state.get("model", state))
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TGSInputError(f"snapshot {path} does not hold the weights of this run's model "
                                f"({opts.model}, width {opts.width}): {first}") from None
        members.append(model.eval())
    return members


def default_min_sizes() -> list[int]:
    """Candidate minimum component sizes (pixels at 101x101) for the out-of-fold search."""
    return [0, 10, 20, 40, 80]


def search_postprocess(
    probs: Tensor,
    masks: Tensor,
    salt_prob: Tensor | None = None,
    thresholds: Sequence[float] | None = None,
    min_sizes: Sequence[int] | None = None,
    empty_threshold: float = 0.5,
) -> dict[str, Any]:
    """Grid search of the threshold and the minimum component size on out-of-fold predictions.

    For each ``min_size`` the threshold is searched with :func:`search_threshold`, the
    post-processing (small-component removal, then the empty-image rule when ``salt_prob`` is
    given) applied before scoring. Returns ``{"threshold", "min_size", "score", "table"}`` where
    ``table`` maps each min size to its :class:`ThresholdSearch`.
    """
    sizes = default_min_sizes() if min_sizes is None else [int(s) for s in min_sizes]
    table: dict[int, ThresholdSearch] = {}
    for size in sizes:
        table[size] = search_threshold(
            probs, masks, thresholds,
            postprocess=lambda pred, s=size: suppress_empty(remove_small(pred, s), salt_prob,
                                                           empty_threshold))
    best = max(sizes, key=lambda s: (table[s].score, -s))
    return {"threshold": table[best].threshold, "min_size": best, "score": table[best].score,
            "table": table}


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise TGSInputError(f"{path} is missing: is this a run folder written by 'segtutor tgs train'?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TGSInputError(f"{path} is not valid JSON: {err}") from None


_CONFIG_KEYS = {"options": dict, "data": str, "ids": list, "folds": list, "trained_folds": list}


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN/config.json`` of a run folder, checked; ``"options"`` becomes a :class:`TrainOptions`.

    Raises TGSInputError naming the file and what is wrong: not JSON, not an object, a missing
    or mistyped key, an option this version does not know, an option out of range, a trained
    fold out of range. (A run written by a newer segtutor with new options is refused rather
    than half understood.)
    """
    path = Path(run_dir) / "config.json"
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        raise TGSInputError(f"{path}: expected a JSON object, got a JSON {type(cfg).__name__}")
    for key, kind in _CONFIG_KEYS.items():
        if not isinstance(cfg.get(key), kind):
            raise TGSInputError(f"{path}: {key!r} is missing or not a JSON "
                                f"{'object' if kind is dict else kind.__name__}")
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(cfg["options"]) - known)
    if unknown:
        raise TGSInputError(f"{path}: unknown option(s) {', '.join(map(repr, unknown))}")
    try:
        opts = TrainOptions(**cfg["options"])
        opts.validate()
    except (TypeError, ValueError) as err:
        raise TGSInputError(f"{path}: {err}") from None
    trained = cfg["trained_folds"]
    if not trained or not all(isinstance(k, int) and not isinstance(k, bool)
                              and 0 <= k < opts.folds for k in trained):
        raise TGSInputError(f"{path}: 'trained_folds' must list fold numbers in "
                            f"0..{opts.folds - 1}, got {trained!r}")
    return {**cfg, "options": opts}


def _read_postprocess(path: Path) -> dict[str, Any]:
    """``RUN/postprocess.json``: the threshold and minimum component size chosen at training."""
    chosen = _read_json(path)
    threshold = chosen.get("threshold") if isinstance(chosen, dict) else None
    min_size = chosen.get("min_size") if isinstance(chosen, dict) else None
    if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
            or not 0 <= threshold <= 1
            or isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0):
        raise TGSInputError(f"{path}: expected an object with 'threshold' in [0, 1] and "
                            "'min_size' >= 0; train again, or give --threshold and --min-size")
    return chosen


def train(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    options: TrainOptions | None = None,
    resume: bool = False,
) -> Path:
    """The whole training recipe; writes a run folder that :func:`predict` reads.

    Args:
        run_dir: output folder (created). It receives ``config.json`` (the resolved options, the
            data folder, the fold of every image), ``fold<k>/snapshot_<j>.pt`` (weights),
            ``fold<k>/history.json`` (one row per epoch), ``oof.pt`` (out-of-fold probabilities
            of the trained folds) and ``postprocess.json`` (threshold and minimum component size
            chosen on them).
        data: a folder in Kaggle's layout; None writes a synthetic set into ``run_dir/data``
            first (quick: 400 images, full: 4000).
        options: :class:`TrainOptions`; None = the defaults.
        resume: keep the folds an earlier call already finished in ``run_dir`` (those with
            their ``history.json``, written when a fold's training ends) and train only the
            others; the out-of-fold predictions and the post-processing are then computed over
            every trained fold. The earlier call must have used the same data and recipe (a
            TGSInputError says what differs). For runs longer than one sitting, e.g. a GPU lent
            in calls of a few minutes: run the same command again with ``--resume``.

    Returns:
        ``run_dir`` as a Path.
    """
    opts = (options or TrainOptions()).resolved()
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise TGSInputError(f"run folder {run} exists and is not a folder")
    if not resume and run.is_dir() and any(run.iterdir()):
        # training into it would leave an earlier run's snapshots beside the new ones, and
        # predict would average both
        raise TGSInputError(f"run folder {run} is not empty; choose a new --out, or add --resume "
                            "to continue the run it holds")
    if data is not None:
        data = _require_dir(Path(data), "data folder")
    # the topmost folder this call creates: removed again if the call fails before any fold
    # is finished, so that a failed run leaves nothing behind
    created = None
    for folder in (run, *run.parents):
        if folder.exists():
            break
        created = folder
    try:
        run.mkdir(parents=True, exist_ok=True)
        _train(run, data, opts, resume)
    except BaseException:
        if created is not None and not list(run.glob("fold*/history.json")):
            shutil.rmtree(created, ignore_errors=True)
        raise
    return run


def _train(run: Path, data: Path | None, opts: TrainOptions, resume: bool) -> None:
    """The body of :func:`train`, in an existing ``run`` folder with resolved ``opts``."""
    from segtutor import config
    from segtutor.train.checkpoint import atomic_save
    from segtutor.train.trainer import NonFiniteLossError

    if data is None:
        data = run / "data"
        if not (data / "train.csv").is_file():
            synth(data, n=config.pick(400, 4000), seed=opts.seed, progress=opts.progress)
    split = load_split(data, "train")
    n = len(split.ids) if opts.n_images is None else min(opts.n_images, len(split.ids))
    ids, images, masks = split.ids[:n], split.images[:n], split.masks[:n]
    folds = make_folds(masks, opts.folds, opts.seed)
    x = to_model_size(images, opts.size_mode)
    y = to_model_size(masks, opts.size_mode, mask=True)
    todo = list(range(opts.folds)) if opts.train_folds is None else list(opts.train_folds)
    cfg = {"options": asdict(opts), "data": str(data.resolve()), "ids": ids,
           "folds": folds.tolist(), "trained_folds": todo}
    finished: list[int] = []
    if resume and (run / "config.json").is_file():
        earlier = read_run_config(run)
        earlier["options"] = asdict(earlier["options"])
        _check_same_run(earlier, cfg)
        finished = [k for k in earlier["trained_folds"]
                    if (run / f"fold{k}" / "history.json").is_file()]
        todo = sorted(set(todo) | set(finished))
        cfg["trained_folds"] = todo
    _write_json(run / "config.json", cfg)

    oof = torch.zeros(n, TGS_SIZE, TGS_SIZE)
    oof_salt = torch.zeros(n)
    seen = torch.zeros(n, dtype=torch.bool)
    has_head = True
    for k in todo:
        tr, va = folds != k, folds == k
        if k in finished:
            snapshots = _snapshot_paths(run / f"fold{k}")
            if opts.verbose:
                print(f"fold {k}: finished by an earlier call, reusing its {len(snapshots)} "
                      "snapshot(s)")
        else:
            try:
                result = fit_fold(opts, (x[tr], y[tr]), (x[va], y[va]), run / f"fold{k}",
                                  name=f"fold{k}")
            except NonFiniteLossError as err:
                raise TGSInputError(f"fold {k}: training diverged: {err}") from None
            # written last: its presence marks the fold as finished for --resume
            _write_json(run / f"fold{k}" / "history.json", result["history"])
            snapshots = result["snapshots"]
        members = load_members(opts, snapshots)
        probs, salt = predict_probs(members, x[va], opts.size_mode, tta=True,
                                    progress=opts.progress)
        if not torch.isfinite(probs).all():
            raise TGSInputError(f"fold {k}: the models in {run / f'fold{k}'} predict NaN or "
                                "infinite probabilities (the training diverged): lower the "
                                "learning rate (--lr) and train again in a new --out")
        oof[va] = probs
        seen |= va
        if salt is None:
            has_head = False
        else:
            oof_salt[va] = salt
    atomic_save({"ids": [i for i, s in zip(ids, seen.tolist()) if s],
                 "probs": oof[seen].half(), "masks": masks[seen].bool(),
                 "salt_prob": oof_salt[seen] if has_head else None}, run / "oof.pt")
    chosen = search_postprocess(oof[seen], masks[seen], oof_salt[seen] if has_head else None)
    _write_json(run / "postprocess.json", {
        "threshold": chosen["threshold"], "min_size": chosen["min_size"],
        "oof_tgs_map": chosen["score"],
        "oof_tgs_map_at_0.5": search_threshold(oof[seen], masks[seen], [0.5]).score,
        "table": {str(s): {"thresholds": r.thresholds, "scores": r.scores}
                  for s, r in chosen["table"].items()},
    })


# options that may change between the calls of one resumed run: they do not change the models
_RUN_CONTROL = ("train_folds", "progress", "verbose", "tensorboard", "visdom")


def _check_same_run(earlier: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Raise TGSInputError when a resumed run would mix folds of different data or recipes.

    Checked from the most specific cause to the least: the data folder (resolved paths, so
    ``d20`` and ``./d20`` are the same folder), the recipe (a changed ``--n-images`` or
    ``--seed`` is named as such), the images in the folder, the fold assignment.
    """
    if Path(earlier["data"]).resolve() != Path(now["data"]).resolve():
        raise TGSInputError(f"--resume: the run folder was trained on {earlier['data']}, not "
                            f"{now['data']}; use the same --data or a new --out")
    changed = sorted(k for k, v in now["options"].items()
                     if k not in _RUN_CONTROL and earlier["options"].get(k) != v)
    if changed:
        raise TGSInputError("--resume: the recipe differs from the earlier call in "
                            f"{', '.join(changed)}; use the same options or a new --out")
    if earlier["ids"] != now["ids"]:
        raise TGSInputError(f"--resume: the data folder {now['data']} holds other images than "
                            f"when the run was trained ({len(earlier['ids'])} image ids then, "
                            f"{len(now['ids'])} now, or in another order); use a new --out")
    if earlier["folds"] != now["folds"]:
        raise TGSInputError("--resume: the fold assignment differs from the earlier call; "
                            "use a new --out")


def _snapshot_paths(fold_dir: Path) -> list[Path]:
    """The ``snapshot_<j>.pt`` files of a fold (``j`` a number), in cycle order."""
    numbered = [(int(p.stem[len("snapshot_"):]), p) for p in fold_dir.glob("snapshot_*.pt")
                if p.stem[len("snapshot_"):].isdecimal() and p.stem[len("snapshot_"):].isascii()]
    if not numbered:
        raise TGSInputError(f"{fold_dir} has no snapshot_<number>.pt files")
    return [p for _, p in sorted(numbered)]


def predict(
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    threshold: float | str = "auto",
    min_size: int | str = "auto",
    empty_threshold: float = 0.5,
    tta: bool = True,
    snapshots: str = "all",
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict ``split`` of ``data_dir`` with every model of a run and write ``submission.csv``.

    Snapshot and fold ensembling (mean probability), flip TTA, the threshold and minimum
    component size (``"auto"``: the ones chosen on the out-of-fold predictions at training
    time), the empty-image rule, 101x101, :func:`write_submission` (atomic, validated).

    Returns a summary dict: ``n_images``, ``n_models``, ``threshold``, ``min_size``, ``path``.
    """
    run = _require_dir(Path(run_dir), "run folder")
    data = _require_dir(Path(data_dir), "data folder")
    out = Path(out)
    if out.is_dir():
        raise TGSInputError(f"--out {out} is a folder; give a file name such as submission.csv")
    if not out.parent.is_dir():
        raise TGSInputError(f"cannot write {out}: folder {out.parent} does not exist")
    check_target(out)  # a device or a FIFO is refused now, not after the predictions
    if snapshots not in ("all", "last"):
        raise ValueError(f"snapshots must be 'all' or 'last', got {snapshots!r}")
    cfg = read_run_config(run)
    opts = cfg["options"]
    paths: list[Path] = []
    for k in cfg["trained_folds"]:
        fold_paths = _snapshot_paths(run / f"fold{k}")
        paths += fold_paths if snapshots == "all" else fold_paths[-1:]
    if threshold == "auto" or min_size == "auto":
        chosen = _read_postprocess(run / "postprocess.json")
        threshold = chosen["threshold"] if threshold == "auto" else threshold
        min_size = chosen["min_size"] if min_size == "auto" else min_size
    arrays = load_split(data, split)
    members = load_members(opts, paths)
    x = to_model_size(arrays.images, opts.size_mode)
    probs, salt = predict_probs(members, x, opts.size_mode, tta=tta, batch_size=batch_size,
                                progress=progress)
    masks = postprocess(probs, float(threshold), int(min_size), salt, empty_threshold)
    write_submission(out, arrays.ids, masks)
    return {"n_images": len(arrays.ids), "n_models": len(members), "threshold": float(threshold),
            "min_size": int(min_size), "path": str(out)}
