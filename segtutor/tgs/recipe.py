"""The training recipe: two loss stages per fold, snapshots, out-of-fold post-processing search.

Per fold: stage 1 trains with BCE (or BCE + Dice); stage 2 continues with the Lovasz hinge
(symmetric by default: salt and background) under cosine annealing with warm restarts and saves
one snapshot per cycle (:func:`fit_fold`). Over the folds, :func:`train` writes the run folder
(:mod:`segtutor.tgs.run`), predicts each fold's held-out images with its snapshots and chooses
the threshold and minimum component size on those out-of-fold predictions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segtutor import config, losses, monitor
from segtutor.data.datasets import InMemoryDataset
from segtutor.data.loaders import DeviceLoader, make_loader
from segtutor.data.tgs import coverage_folds
from segtutor.data.transforms import batch_lighting, batch_random_flip, make_augmentation
from segtutor.models.outputs import split_output
from segtutor.tgs.inference import build, load_members, predict_probs
from segtutor.tgs.layout import (
    TGS_SIZE,
    TGSInputError,
    _require_dir,
    load_split,
    synth,
    to_model_size,
)
from segtutor.tgs.options import TrainOptions
from segtutor.tgs.postprocessing import search_postprocess, search_threshold
from segtutor.tgs.run import _check_same_run, _write_json, read_run_config, snapshot_paths
from segtutor.train import NonFiniteLossError, Trainer, checkpoint, loop, schedules
from segtutor.train.slices import ResumePoints

# A fold's training writes a resume point (the trainer's whole state: weights, Adam, scheduler,
# RNG, shuffling order, history) every this many epochs and at the end of each stage, so that a
# run stopped by a time limit (a GPU lent in 10-minute calls) continues within the fold instead
# of starting the fold again. train() removes them once the fold is finished.
RESUME_EVERY = 5

# --------------------------------------------------------------------------------------------
# The empty-image loss term: a criterion over the model's whole output
# --------------------------------------------------------------------------------------------


def has_salt(masks: Tensor) -> Tensor:
    """``[B, H, W]`` masks -> ``[B]`` float: 1 where the image contains any salt pixel."""
    return (masks.flatten(1) > 0.5).any(dim=1).float()


class WithEmptyImageHead(torch.nn.Module):
    """``loss(output, masks) + cls_weight * BCE(cls, has_salt(masks))``.

    The ResNet34 U-Net with ``classify=True`` returns ``{"out", "aux", "cls"}`` in training mode;
    ``loss`` scores the segmentation outputs (e.g. :class:`segtutor.losses.WithAuxiliary`:
    ``out`` and the deep-supervision ``aux``), and this adds the image-level term whose target
    is "the mask is not empty". An output without ``"cls"`` (eval mode) gets ``loss`` alone.
    """

    def __init__(self, loss: Callable[[Any, Tensor], Tensor], cls_weight: float = 0.05) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(
                f"loss must be a criterion loss(output, masks), got {type(loss).__name__}"
            )
        if (
            isinstance(cls_weight, bool)
            or not isinstance(cls_weight, (int, float))
            or not cls_weight >= 0
        ):
            raise ValueError(f"cls_weight must be a number >= 0, got {cls_weight!r}")
        self.loss, self.cls_weight = loss, float(cls_weight)
        self.handled_outputs = (*getattr(loss, "handled_outputs", ("out",)), "cls")

    def forward(self, output: Any, masks: Tensor) -> Tensor:
        total = self.loss(output, masks)
        cls_logit = split_output(output)[1].get("cls")
        if cls_logit is not None and self.cls_weight:
            total = total + self.cls_weight * F.binary_cross_entropy_with_logits(
                cls_logit.reshape(-1).float(), has_salt(masks)
            )
        return total


def _criterion(loss: Callable[[Tensor, Tensor], Tensor], opts: TrainOptions) -> torch.nn.Module:
    """The criterion of a stage: ``loss`` on the main and (weighted) deep-supervision outputs,
    plus the empty-image term when the model has that head."""
    criterion = losses.WithAuxiliary(loss, opts.aux_weight)
    return WithEmptyImageHead(criterion, opts.cls_weight) if opts.classify else criterion


def _make_trainer(
    model: torch.nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    opts: TrainOptions,
    **kwargs: Any,
) -> Trainer:
    """The one place a trainer of the recipe is created (both stages)."""
    return Trainer(
        model,
        _criterion(loss, opts),
        optimizer,
        train_loader,
        num_classes=1,
        amp="auto" if opts.amp else False,
        monitor="val_tgs_map",
        mode="max",
        progress=opts.progress,
        verbose=opts.verbose,
        scheduler_interval="step",
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# One fold
# --------------------------------------------------------------------------------------------


def _stage1_criterion(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    return losses.BCEWithLogitsLoss() if name == "bce" else losses.BCEDiceLoss()


def _stage2_criterion(variant: str, symmetric: bool) -> Callable[[Tensor, Tensor], Tensor]:
    return losses.LovaszHingeLoss(
        activation="elu+1" if variant == "elu" else "relu", symmetric=symmetric
    )


def _make_logger(opts: TrainOptions, name: str, run_dir: Path) -> Any:
    """TensorBoard and/or visdom loggers as asked for; None when neither is.

    TensorBoard event files go to ``<tensorboard>/<name>``. visdom posts live to the server on
    127.0.0.1:``visdom`` when one answers, and always keeps its message log in
    ``run_dir/visdom/<name>.jsonl`` (replayable with :func:`segtutor.monitor.replay`).
    """
    loggers = []
    if opts.tensorboard:
        loggers.append(monitor.TensorBoardLogger(Path(opts.tensorboard) / name))
    if opts.visdom:
        loggers.append(
            monitor.VisdomLogger(
                env=name.replace("/", "_"),
                port=opts.visdom,
                log_file=run_dir / "visdom" / f"{name}.jsonl",
            )
        )
    if not loggers:
        return None
    return loggers[0] if len(loggers) == 1 else monitor.MultiLogger(loggers)


class _BatchAugment:
    """Batch augmentation of the recipe on ``device``: random left-right flips (salt on the left
    looks like salt on the right; up-down is *not* symmetric in a seismic section) and lighting.
    Its ``generator`` is an attribute so that the trainer's checkpoints (resume points) keep it.
    """

    def __init__(self, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        images, masks = batch_random_flip(images, masks, hflip=0.5, generator=self.generator)
        images = batch_lighting(images, brightness=0.1, contrast=0.1, generator=self.generator)
        return images, masks


def _loader(images: Tensor, masks: Tensor, opts: TrainOptions, shuffle: bool, seed: int) -> Any:
    """Batches of ``(images [B,1,128,128], masks [B,128,128])``.

    On CUDA with ``gpu_data`` (and always on the CPU) the tensors stay where the model is and are
    sliced into batches there (:class:`segtutor.data.loaders.DeviceLoader`), with the batch
    augmentation on the same device; otherwise a seeded DataLoader with per-sample transforms.
    """
    device = config.device()
    if device.type != "cuda" or opts.gpu_data:
        augment = _BatchAugment(device, seed) if (shuffle and opts.augment) else None
        return DeviceLoader(
            images,
            masks,
            opts.batch_size,
            shuffle=shuffle,
            seed=seed,
            device=device,
            augment=augment,
        )
    transform = (
        make_augmentation(hflip=0.5, brightness=0.1, contrast=0.1)
        if (shuffle and opts.augment)
        else None
    )
    return make_loader(
        InMemoryDataset(images, masks, transform=transform),
        opts.batch_size,
        shuffle=shuffle,
        seed=seed,
        num_workers=2,
    )


def resume_files(fold_dir: str | os.PathLike) -> list[Path]:
    """The resume points of an unfinished fold (``resume_stage<k>.pt``)."""
    return sorted(Path(fold_dir).glob("resume_stage*.pt"))


def has_progress(run_dir: str | os.PathLike) -> bool:
    """Whether a run folder holds work worth keeping: a finished fold or a resume point."""
    run = Path(run_dir)
    return any(run.glob("fold*/history.json")) or any(run.glob("fold*/resume_stage*.pt"))


def _fit_stage(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    loaders: tuple[Any, Any],
    opts: TrainOptions,
    epochs: int,
    cycle_epochs: int,
    min_lr_factor: float,
    logger_name: str,
    run_dir: Path,
    callbacks: tuple[Any, ...] = (),
    resume_path: Path | None = None,
    resume: bool = False,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """One loss stage: Adam at ``opts.lr`` under cosine annealing with warm restarts (one cycle
    of ``cycle_epochs``, down to ``min_lr_factor * lr``), ``epochs`` epochs. Each stage logs
    under its own name, since both count their epochs from 1. With ``resume_path`` the stage
    writes resume points there (:data:`RESUME_EVERY`); with ``resume`` and that file present it
    continues from it (a stage already finished returns its history without training)."""
    train_loader, val_loader = loaders
    fused = loop.fused_option(config.device())
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, fused=fused)
    scheduler = schedules.cosine_warm_restarts(
        optimizer, cycle_epochs * len(train_loader), min_lr=opts.lr * min_lr_factor
    )
    logger = _make_logger(opts, logger_name, run_dir)
    if resume_path is not None:
        callbacks = (*callbacks, ResumePoints(resume_path, every_epochs=RESUME_EVERY))
    trainer = _make_trainer(
        model,
        criterion,
        optimizer,
        train_loader,
        opts,
        val_loader=val_loader,
        scheduler=scheduler,
        logger=logger,
        callbacks=callbacks,
    )
    start = resume_path if resume and resume_path is not None and resume_path.is_file() else None
    if start is not None and opts.verbose:
        print(f"{logger_name}: continuing from {start}", flush=True)
    rows = trainer.fit(epochs, resume=start)
    if logger is not None:
        logger.close()
    return trainer, rows


def fit_fold(
    opts: TrainOptions,
    train_xy: tuple[Tensor, Tensor],
    val_xy: tuple[Tensor, Tensor],
    fold_dir: str | os.PathLike,
    name: str = "fold0",
    init_state: Mapping[str, Tensor] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one fold: stage 1 (BCE or BCE+Dice), then stage 2 (Lovász hinge) under cosine
    annealing with warm restarts, one snapshot per cycle.

    Args:
        opts: resolved :class:`TrainOptions`.
        train_xy, val_xy: ``(images [N,1,128,128], masks [N,128,128])`` at the model size.
        fold_dir: where ``snapshot_<k>.pt`` files go (one per stage-2 cycle; the stage-1 weights
            as ``snapshot_1.pt`` when there is no stage 2, as ``stage1.pt`` when there is).
        name: the run name for the loggers.
        init_state: start from these weights instead of a fresh model (the ablation chapter
            continues a stage-1 model with stage 2).
        resume: continue from the resume points an earlier, interrupted call left in
            ``fold_dir`` (``resume_stage1.pt``, ``resume_stage2.pt``: the whole trainer state,
            written every :data:`RESUME_EVERY` epochs), so the fold ends as it would have
            without the interruption; without it, the fold trains from the start.

    Returns:
        ``{"history": [rows], "snapshots": [paths], "model": the trained module}``; each history
        row is a Trainer row plus ``"stage"`` (1 or 2).
    """
    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    model = build(opts)
    if init_state is not None:
        model.load_state_dict(init_state)
    loaders = (
        _loader(*train_xy, opts, shuffle=True, seed=opts.seed),
        _loader(*val_xy, opts, shuffle=False, seed=opts.seed),
    )
    history: list[dict[str, Any]] = []
    if opts.stage1_epochs:
        # one cosine cycle over the whole stage: plain cosine annealing
        trainer, rows = _fit_stage(
            model,
            _stage1_criterion(opts.stage1_loss),
            loaders,
            opts,
            opts.stage1_epochs,
            opts.stage1_epochs,
            0.05,
            f"{name}/stage1",
            fold_dir.parent,
            resume_path=fold_dir / "resume_stage1.pt",
            resume=resume,
        )
        history += [dict(row, stage=1) for row in rows]
        if opts.cycles:
            # the model before its Lovasz stage, which the ablation chapter scores; not named
            # snapshot_<j>.pt, so prediction does not average it in
            checkpoint.atomic_save(
                {
                    "model": {
                        k: v.detach().cpu()
                        for k, v in checkpoint.unwrap(trainer.module).state_dict().items()
                    }
                },
                fold_dir / "stage1.pt",
            )
    if opts.cycles:
        saver = schedules.SnapshotSaver(opts.cycle_epochs, directory=fold_dir)
        trainer, rows = _fit_stage(
            model,
            _stage2_criterion(opts.lovasz, opts.symmetric_lovasz),
            loaders,
            opts,
            opts.cycles * opts.cycle_epochs,
            opts.cycle_epochs,
            0.01,
            f"{name}/stage2",
            fold_dir.parent,
            callbacks=(saver,),
            resume_path=fold_dir / "resume_stage2.pt",
            resume=resume,
        )
        offset = len(history)
        history += [dict(row, stage=2, epoch=row["epoch"] + offset) for row in rows]
        # from the folder: a resumed stage saved only the cycles after its resume point
        snapshots = snapshot_paths(fold_dir)[: opts.cycles]
    else:
        state = {
            k: v.detach().cpu() for k, v in checkpoint.unwrap(trainer.module).state_dict().items()
        }
        snapshots = [checkpoint.atomic_save({"model": state}, fold_dir / "snapshot_1.pt")]
    return {"history": history, "snapshots": snapshots, "model": checkpoint.unwrap(trainer.module)}


# --------------------------------------------------------------------------------------------
# All folds: the run folder
# --------------------------------------------------------------------------------------------


def train(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    options: TrainOptions | None = None,
    resume: bool = False,
) -> Path:
    """The whole training recipe; writes a run folder that :func:`segtutor.tgs.predict` reads.

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
            their ``history.json``, written when a fold's training ends), continue a fold it
            left unfinished from its last resume point (every :data:`RESUME_EVERY` epochs and
            at each stage's end) and train the others; the out-of-fold predictions and the
            post-processing are then computed over every trained fold. The earlier call must
            have used the same data and recipe (a TGSInputError says what differs). For runs
            longer than one sitting, e.g. a GPU lent in calls of a few minutes: run the same
            command again with ``--resume``; no call loses more than a few epochs.

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
        raise TGSInputError(
            f"run folder {run} is not empty; choose a new --out, or add --resume "
            "to continue the run it holds"
        )
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
        if created is not None and not has_progress(run):
            shutil.rmtree(created, ignore_errors=True)
        raise
    return run


def _train(run: Path, data: Path | None, opts: TrainOptions, resume: bool) -> None:
    """The body of :func:`train`, in an existing ``run`` folder with resolved ``opts``."""
    if data is None:
        data = run / "data"
        if not (data / "train.csv").is_file():
            synth(data, n=config.pick(400, 4000), seed=opts.seed, progress=opts.progress)
    split = load_split(data, "train")
    n = len(split.ids) if opts.n_images is None else min(opts.n_images, len(split.ids))
    ids, images, masks = split.ids[:n], split.images[:n], split.masks[:n]
    folds = coverage_folds(masks, k=opts.folds, seed=opts.seed)
    x = to_model_size(images, opts.size_mode)
    y = to_model_size(masks, opts.size_mode, mask=True)
    todo = list(range(opts.folds)) if opts.train_folds is None else list(opts.train_folds)
    cfg = {
        "options": asdict(opts),
        "data": str(data.resolve()),
        "ids": ids,
        "folds": folds.tolist(),
        "trained_folds": todo,
    }
    finished: list[int] = []
    if resume and (run / "config.json").is_file():
        earlier = read_run_config(run)
        earlier["options"] = asdict(earlier["options"])
        _check_same_run(earlier, cfg)
        finished = [
            k for k in earlier["trained_folds"] if (run / f"fold{k}" / "history.json").is_file()
        ]
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
            snapshots = snapshot_paths(run / f"fold{k}")
            if opts.verbose:
                print(
                    f"fold {k}: finished by an earlier call, reusing its {len(snapshots)} "
                    "snapshot(s)"
                )
        else:
            try:
                result = fit_fold(
                    opts,
                    (x[tr], y[tr]),
                    (x[va], y[va]),
                    run / f"fold{k}",
                    name=f"fold{k}",
                    resume=resume,
                )
            except NonFiniteLossError as err:
                raise TGSInputError(f"fold {k}: training diverged: {err}") from None
            # written last: its presence marks the fold as finished for --resume
            _write_json(run / f"fold{k}" / "history.json", result["history"])
            for path in resume_files(run / f"fold{k}"):  # Adam's state: no longer needed
                path.unlink()
            snapshots = result["snapshots"]
        members = load_members(opts, snapshots)
        probs, salt = predict_probs(
            members, x[va], opts.size_mode, tta=True, progress=opts.progress
        )
        if not torch.isfinite(probs).all():
            raise TGSInputError(
                f"fold {k}: the models in {run / f'fold{k}'} predict NaN or "
                "infinite probabilities (the training diverged): lower the "
                "learning rate (--lr) and train again in a new --out"
            )
        oof[va] = probs
        seen |= va
        if salt is None:
            has_head = False
        else:
            oof_salt[va] = salt
    # oof.pt keeps half precision (a quarter of the disk); the search runs on exactly those
    # values, so that oof.pt reproduces the stored choice and score to the last digit
    # (thresholding float32 and float16 copies of a probability can disagree near the threshold).
    oof_seen = oof[seen].half()
    checkpoint.atomic_save(
        {
            "ids": [i for i, s in zip(ids, seen.tolist()) if s],
            "probs": oof_seen,
            "masks": masks[seen].bool(),
            "salt_prob": oof_salt[seen] if has_head else None,
        },
        run / "oof.pt",
    )
    oof_seen = oof_seen.float()
    chosen = search_postprocess(oof_seen, masks[seen], oof_salt[seen] if has_head else None)
    _write_json(
        run / "postprocess.json",
        {
            "threshold": chosen["threshold"],
            "min_size": chosen["min_size"],
            "empty_threshold": chosen["empty_threshold"],
            "empty_scores": {f"{e:g}": v for e, v in chosen["empty_scores"].items()},
            "oof_tgs_map": chosen["score"],
            "oof_tgs_map_at_0.5": search_threshold(oof_seen, masks[seen], [0.5]).score,
            "table": {
                str(s): {"thresholds": r.thresholds, "scores": r.scores}
                for s, r in chosen["table"].items()
            },
        },
    )
