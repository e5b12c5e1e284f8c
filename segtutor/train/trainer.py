"""A small, readable training loop for segmentation.

:class:`Trainer` calls the loop's functions (:mod:`segtutor.train.loop`) and keeps the
bookkeeping. The five parts of a training program are its arguments: the **data**
(``train_loader``, ``val_loader``), the **model**, the **criterion**, the **optimizer** (with an
optional scheduler) and the **logger**. Each epoch follows the train / validate / (test) flow and,
inside it, the four steps *print, plot, save, update*: print a one-line summary, plot to the
logger, save a checkpoint, update the learning rate and the early-stopping state.

Binary tasks (``num_classes=1``): logits ``[B, 1, H, W]``, float masks ``[B, H, W]`` in {0, 1}
(other masks are converted), prediction ``logits > 0``, the TGS metric reported too. Multi-class:
logits ``[B, C, H, W]``, long labels ``[B, H, W]`` with 255 = ignore, prediction ``argmax``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from segtutor import checks, config
from segtutor.data.loaders import DeviceLoader
from segtutor.losses import WithAuxiliary, output_criterion
from segtutor.models.outputs import main_output, output_keys
from segtutor.train import checkpoint as ckpt
from segtutor.train import distributed as dist_utils
from segtutor.train import loop
from segtutor.train.bookkeeping import (
    Callback,
    check_trainer_arguments,
    epoch_summary,
    improved,
    log_epoch_images,
    log_epoch_scalars,
    step_epoch_scheduler,
)
from segtutor.train.loop import NonFiniteLossError

# Callback, DeviceLoader and NonFiniteLossError were defined here first: still importable
__all__ = ["Callback", "DeviceLoader", "NonFiniteLossError", "Trainer"]

Batch = Any


class Trainer:
    """Fit, evaluate and predict with one model.

    Args:
        model: returns logits ``[B, C, H, W]`` (``C = num_classes``, 1 for binary); in train mode
            it may return ``{"out": logits, "aux": logits or [logits, ...], ...}``.
        criterion: ``criterion(output, masks) -> scalar`` on the model's whole output (e.g.
            :class:`segtutor.losses.WithAuxiliary`, :class:`segtutor.losses.DeepSupervisionLoss`),
            which names the parts it reads in ``handled_outputs``; or a plain
            ``loss(logits, masks)``, which the Trainer wraps in ``WithAuxiliary(criterion,
            aux_weight, aux_criterion)``.
        optimizer: a ``torch.optim`` optimizer over the model's parameters.
        train_loader, val_loader: iterables of ``(images [B, C, H, W], masks [B, H, W])``.
        num_classes: 1 for a binary task, else the number of classes.
        scheduler: a ``torch.optim.lr_scheduler`` object, stepped every epoch
            (``scheduler_interval="epoch"``) or every optimisation step (``"step"``);
            ``ReduceLROnPlateau`` is stepped with the monitored metric.
        logger: a :class:`segtutor.monitor.Logger` (or None).
        device: default ``segtutor.config.device()``.
        aux_criterion, aux_weight: for a plain criterion, the loss on auxiliary outputs:
            ``loss = main + aux_weight * aux`` (default weight 0.4, ``aux_criterion`` defaults
            to ``criterion``). A criterion that reads the output itself takes its own weights.
        amp: ``"auto"`` (bf16 on CUDA where supported, else fp16 with a GradScaler; off on CPU),
            ``"bf16"``, ``"fp16"`` or ``False``.
        channels_last: ``"auto"`` = on CUDA only. Convolutions on tensor cores prefer NHWC.
        compile: wrap the model with ``torch.compile``.
        grad_clip: clip the gradient norm to this value.
        monitor, mode: the metric (a history key) that decides "best" and early stopping;
            default ``"val_mean_iou"`` (max) with a validation loader, else ``"train_loss"`` (min).
        early_stopping: stop after this many epochs without improvement (None = never).
        checkpoint_dir: writes ``last.pt`` every epoch and ``best.pt`` when ``monitor`` improves.
        callbacks: :class:`Callback` objects (e.g. :class:`segtutor.train.SnapshotSaver`).
        progress: progress bars; verbose: the one-line epoch summary.
        log_every: log the step loss and LR every this many steps.
        log_images: log an image/target/prediction grid of the first validation batch each epoch.
        threshold: binary decision threshold on the *logit* (0 = probability 0.5).
    """

    #: the outputs a plain criterion is wrapped to read (an instance has its criterion's)
    handled_outputs: tuple[str, ...] = WithAuxiliary.handled_outputs

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable[Batch] | None,
        val_loader: Iterable[Batch] | None = None,
        *,
        num_classes: int,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        logger: Any = None,
        device: torch.device | str | None = None,
        aux_criterion: Callable[..., torch.Tensor] | None = None,
        aux_weight: float | None = None,
        amp: str | bool = "auto",
        channels_last: str | bool = "auto",
        compile: bool = False,
        grad_clip: float | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        early_stopping: int | None = None,
        min_delta: float = 0.0,
        checkpoint_dir: str | Path | None = None,
        save_best: bool = True,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        verbose: bool = True,
        log_every: int = 10,
        log_images: bool = True,
        log_histograms: bool = False,
        threshold: float = 0.0,
        ignore_index: int = 255,
    ) -> None:
        check_trainer_arguments(
            model, criterion, optimizer, num_classes, scheduler_interval, early_stopping, log_every
        )
        self.device = torch.device(device) if device is not None else config.device()
        self.num_classes = num_classes
        self.binary = num_classes == 1
        self.ignore_index = ignore_index
        self.threshold = float(threshold)
        self._aux = (aux_weight, aux_criterion)
        self.criterion = criterion  # a plain loss is wrapped: see the property
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.grad_clip = grad_clip
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.log_every = log_every
        self.log_images = log_images
        self.log_histograms = log_histograms

        # distributed: only rank 0 prints, logs and saves
        self.dist = dist_utils.DistInfo.current()
        self.is_main = self.dist.rank == 0
        self.logger = logger if self.is_main else None
        self.progress = progress and self.is_main

        cuda = self.device.type == "cuda"
        self.amp_dtype = loop.amp_dtype(amp, self.device)
        # fp16 needs loss scaling (its range is too small for small gradients); bf16 does not
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.channels_last = cuda if channels_last == "auto" else bool(channels_last)

        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = model  # the plain module: state_dict, checkpoints
        if self.dist.world_size > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
            model = dist_utils.wrap_ddp(model, self.device)
        self.model = torch.compile(model) if compile else model

        if monitor is None:
            monitor = "val_mean_iou" if val_loader is not None else "train_loss"
        if mode is None:
            mode = "min" if "loss" in monitor else "max"
        checks.one_of("mode", mode, ("min", "max"))
        self.monitor, self.mode = monitor, mode
        self.early_stopping, self.min_delta = early_stopping, float(min_delta)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.save_best = save_best

        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimisation steps completed
        self.history: list[dict[str, float]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stop_training = False
        self._shapes_checked = False

    # ------------------------------------------------------------------ set-up helpers
    def _step_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`segtutor.train.loop.train_step` for this trainer."""
        return {
            "scheduler": self.scheduler if self.scheduler_interval == "step" else None,
            "scaler": self.scaler,
            "amp_dtype": self.amp_dtype,
            "grad_clip": self.grad_clip,
            "channels_last": self.channels_last,
        }

    # ------------------------------------------------------------------ the loss
    @property
    def criterion(self) -> Callable[..., torch.Tensor]:
        """The criterion over whole model outputs. Assigning a plain ``loss(logits, masks)``
        (a chapter switches losses between stages this way) wraps it like the constructor does,
        with the constructor's ``aux_weight`` and ``aux_criterion``."""
        return self._criterion

    @criterion.setter
    def criterion(self, criterion: Callable[..., torch.Tensor]) -> None:
        self._criterion = output_criterion(criterion, *self._aux)
        self.handled_outputs = tuple(self._criterion.handled_outputs)
        self._shapes_checked = False  # the first batch is checked again, and unread outputs said

    def _warn_unused_outputs(self, output: Any) -> None:
        """Say once when the model returns outputs that no loss term reads (e.g. a ``"cls"`` head
        trained by nothing), instead of ignoring them silently."""
        unused = sorted(set(output_keys(output)) - set(self.handled_outputs))
        if unused:
            warnings.warn(
                f"{type(self).__name__} computes no loss for the model's output(s) {unused}: "
                "those heads will not learn. Give the Trainer a criterion that reads them and "
                "lists them in its handled_outputs (segtutor.tgs.WithEmptyImageHead does this "
                "for 'cls').",
                stacklevel=4,
            )

    def check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Raise ValueError when logits and masks cannot belong together (before any backward)."""
        loop.check_shapes(logits, target, self.num_classes)

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        """The criterion on a model output; binary masks become float ``[B, H, W]`` first.

        The first call checks that the main logits and the masks belong together and warns
        about outputs the criterion does not read.
        """
        if not self._shapes_checked:
            self.check_shapes(main_output(output), target)
            self._warn_unused_outputs(output)
            self._shapes_checked = True
        if self.binary:
            target = target.float()
            if target.ndim == 4:
                target = target[:, 0]
        return self.criterion(output, target)

    def compute_loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, main logits)`` of a model output (see :meth:`loss`)."""
        return self.loss(output, target), main_output(output)

    def predict_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> label map ``[B, H, W]`` (long): ``logits > threshold`` or ``argmax``."""
        return loop.predict_labels(logits, self.num_classes, self.threshold)

    # ------------------------------------------------------------------ train and evaluate
    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimisation step (:func:`segtutor.train.loop.train_step`); returns the detached
        loss (a tensor, no host sync)."""
        loss = loop.train_step(
            self.model, self.loss, self.optimizer, batch, self.device, **self._step_options()
        )
        self.global_step += 1
        return loss

    def _after_step(self, loss: torch.Tensor) -> None:
        self.global_step += 1
        if self.logger is not None and self.global_step % self.log_every == 0:
            value = float(loss)
            if math.isfinite(value):
                self.logger.log_scalar("step/train_loss", value, self.global_step)
                self.logger.log_scalar("step/lr", self.lr, self.global_step)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over ``train_loader`` (:func:`segtutor.train.loop.train_one_epoch`);
        returns {"train_loss": mean over batches}."""
        if self.train_loader is None:
            raise ValueError("this Trainer has no train_loader")
        mean = loop.train_one_epoch(
            self.model,
            self.loss,
            self.optimizer,
            self.train_loader,
            self.device,
            epoch=epoch,
            progress=self.progress,
            log_every=self.log_every,
            on_step=self._after_step,
            **self._step_options(),
        )
        return {"train_loss": mean}

    def evaluate(self, loader: Iterable[Batch] | None = None, prefix: str = "") -> dict[str, float]:
        """Loss and segmentation metrics over a loader (default ``val_loader``), from
        :func:`segtutor.train.loop.evaluate`.

        Keys: "loss", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou",
        "frequency_weighted_iou", "dice" and, for binary tasks, "tgs_map"; each prefixed with
        ``prefix``. Under torch.distributed the counts are summed over ranks first, so every rank
        gets the metrics of the whole data set.
        """
        loader = self.val_loader if loader is None else loader
        if loader is None:
            raise ValueError("evaluate() needs a loader (no val_loader was given)")
        scores = loop.evaluate(
            self.model,
            loader,
            self.loss,
            self.num_classes,
            self.device,
            threshold=self.threshold,
            ignore_index=self.ignore_index,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
            progress=self.progress,
        )
        return {prefix + k: v for k, v in scores.items()}

    def predict(self, loader: Iterable[Batch], activation: str | None = None) -> torch.Tensor:
        """Logits ``[N, C, H, W]`` on the CPU for every image of ``loader`` (in loader order);
        ``activation="sigmoid"``/``"softmax"``: probabilities (:func:`segtutor.train.loop.predict`).
        """
        return loop.predict(
            self.model,
            loader,
            self.device,
            activation=activation,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
            progress=self.progress,
        )

    def fit(self, epochs: int, resume: str | Path | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs are completed (counting those of a resumed run).

        Returns the history: one dict per epoch with "epoch", "train_loss", "lr", "time" and, with
        a validation loader, "val_loss", "val_mean_iou", "val_pixel_accuracy", ... (binary tasks
        also "val_tgs_map"). ``resume`` is a checkpoint path written by this class.
        """
        checks.positive_int("epochs", epochs)
        if resume is not None:
            self.load_checkpoint(resume)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self.stop_training = False
        while self.epoch < epochs and not self.stop_training:
            epoch = self.epoch + 1
            t0 = time.perf_counter()
            lr = self.lr
            row: dict[str, float] = {"epoch": epoch}
            row.update(self.train_epoch(epoch))  # train
            if self.val_loader is not None:
                row.update(self.evaluate(self.val_loader, prefix="val_"))  # validate
            row["lr"] = lr
            row["time"] = time.perf_counter() - t0
            self.epoch = epoch
            self.history.append(row)
            self._print(row, epochs)  # print
            self._plot(row)  # plot
            improved = self._update_best(row)  # update
            self._update_schedule(row)
            self._save(improved)  # save (after the
            # update, so that a resumed run starts from the state the next epoch would see)
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        if self.logger is not None:
            self.logger.flush()
        return self.history

    # ------------------------------------------------------------------ print, plot, save, update
    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _print(self, row: Mapping[str, float], epochs: int) -> None:
        if self.verbose and self.is_main:  # tqdm.write: no broken progress bar
            tqdm.write(epoch_summary(row, epochs, self.monitor))

    def _plot(self, row: Mapping[str, float]) -> None:
        if self.logger is None:
            return
        log_epoch_scalars(self.logger, row, self.module if self.log_histograms else None)
        if self.log_images and self.val_loader is not None:
            log_epoch_images(
                self.logger,
                self.model,
                next(iter(self.val_loader)),
                int(row["epoch"]),
                num_classes=self.num_classes,
                device=self.device,
                threshold=self.threshold,
                ignore_index=self.ignore_index,
                amp_dtype=self.amp_dtype,
                channels_last=self.channels_last,
            )

    def _update_best(self, row: Mapping[str, float]) -> bool:
        if self.monitor not in row:
            raise ValueError(
                f"monitor={self.monitor!r} is not in the epoch summary; choose one of {sorted(row)}"
            )
        value = float(row[self.monitor])
        if math.isfinite(value) and improved(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.best_epoch, self.bad_epochs = value, int(row["epoch"]), 0
            return True
        self.bad_epochs += 1
        if self.early_stopping is not None and self.bad_epochs >= self.early_stopping:
            self.stop_training = True
            if self.verbose and self.is_main:
                tqdm.write(
                    f"early stopping: {self.monitor} has not improved for "
                    f"{self.bad_epochs} epochs (best {self.best_value:.4f} at epoch "
                    f"{self.best_epoch})"
                )
        return False

    def _save(self, improved: bool) -> None:
        if self.checkpoint_dir is None or not self.is_main:
            return
        self.save_checkpoint(self.checkpoint_dir / "last.pt")
        if improved and self.save_best:
            self.save_checkpoint(self.checkpoint_dir / "best.pt")

    def _update_schedule(self, row: Mapping[str, float]) -> None:
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            step_epoch_scheduler(self.scheduler, row, self.monitor)

    # ------------------------------------------------------------------ checkpoints
    def state_extra(self) -> dict[str, Any]:
        """Trainer state beyond model/optimizer/scheduler: counters, history, best metric, and
        the shuffling generator of the train loader (so a resumed run sees the same batches)."""
        return {
            "global_step": self.global_step,
            "history": [dict(r) for r in self.history],
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        } | ckpt.loader_generator_state(self.train_loader)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Atomically write everything needed to continue this run (rank 0 only)."""
        if not self.is_main:
            return Path(path)
        return ckpt.save_checkpoint(
            path,
            model=self.module,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            epoch=self.epoch,
            **self.state_extra(),
        )

    def load_checkpoint(self, path: str | Path, weights_only_model: bool = False) -> dict[str, Any]:
        """Restore a checkpoint written by :meth:`save_checkpoint` (every rank reads it).

        The optimizer and scheduler continue where the checkpoint stopped, with the
        checkpoint's learning rate: when the optimizer was built with another one, a warning
        says so (to train the saved weights with a new learning rate, load them with
        ``weights_only_model=True`` and call :meth:`fit` without ``resume``).

        Raises :class:`segtutor.train.checkpoint.CheckpointError` (a ValueError) naming the
        file when it is damaged, is not a checkpoint of this class, or holds another model.
        """
        state = ckpt.restore(
            path,
            model=self.module,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            map_location=self.device,
            weights_only_model=weights_only_model,
        )
        if weights_only_model:
            return state
        self.epoch = int(state["epoch"])
        self.global_step, self.bad_epochs = (
            int(state.get(k, 0)) for k in ("global_step", "bad_epochs")
        )
        self.history = [dict(r) for r in state.get("history", [])]
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch")
        ckpt.restore_loader_generator(self.train_loader, state)
        return state
