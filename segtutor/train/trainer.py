"""A small, readable training loop for segmentation.

The five parts of a training program are its arguments: the **data** (``train_loader``,
``val_loader``), the **model**, the **criterion**, the **optimizer** (with an optional
scheduler) and the **logger**. Each epoch follows the train / validate / (test) flow and, inside it,
the four steps *print, plot, save, update*: print a one-line summary, plot to the logger, save a
checkpoint, update the learning rate and the early-stopping state.

Binary tasks (``num_classes=1``): the model gives logits ``[B, 1, H, W]``, masks are float
``[B, H, W]`` in {0, 1}; the logits are squeezed to ``[B, H, W]`` before the criterion, the
prediction is ``logits > 0`` and the TGS metric is reported too. Multi-class: logits
``[B, C, H, W]``, long labels ``[B, H, W]`` with 255 = ignore, prediction ``argmax``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segtutor import config
from segtutor.train import checkpoint as ckpt
from segtutor.train import distributed as dist_utils

Batch = Any


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class Callback:
    """Hooks called by :class:`Trainer`; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Fit, evaluate and predict with one model.

    Args:
        model: returns logits ``[B, C, H, W]`` (``C = num_classes``, 1 for binary); in train mode
            it may return ``{"out": logits, "aux": logits or [logits, ...]}``.
        criterion: ``criterion(logits, target) -> scalar``.
        optimizer: a ``torch.optim`` optimizer over the model's parameters.
        train_loader, val_loader: iterables of ``(images [B, C, H, W], masks [B, H, W])``.
        num_classes: 1 for a binary task, else the number of classes.
        scheduler: a ``torch.optim.lr_scheduler`` object, stepped every epoch
            (``scheduler_interval="epoch"``) or every optimisation step (``"step"``);
            ``ReduceLROnPlateau`` is stepped with the monitored metric.
        logger: a :class:`segtutor.monitor.Logger` (or None).
        device: default ``segtutor.config.device()``.
        aux_criterion, aux_weight: loss on auxiliary outputs, ``loss = main + aux_weight * aux``
            (``aux_criterion`` defaults to ``criterion``).
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
        progress: tqdm progress bars; verbose: the one-line epoch summary.
        log_every: log the step loss and LR every this many steps.
        log_images: log an image/target/prediction grid of the first validation batch each epoch.
        threshold: binary decision threshold on the *logit* (0 = probability 0.5).
    """

    #: keys of a dict model output that :meth:`compute_loss` turns into loss terms
    handled_outputs: tuple[str, ...] = ("out", "aux")

    def __init__(self, model: nn.Module, criterion: Callable[..., torch.Tensor],
                 optimizer: torch.optim.Optimizer, train_loader: Iterable[Batch] | None,
                 val_loader: Iterable[Batch] | None = None, *, num_classes: int,
                 scheduler: Any = None, scheduler_interval: str = "epoch", logger: Any = None,
                 device: torch.device | str | None = None,
                 aux_criterion: Callable[..., torch.Tensor] | None = None, aux_weight: float = 0.4,
                 amp: str | bool = "auto", channels_last: str | bool = "auto",
                 compile: bool = False, grad_clip: float | None = None,
                 monitor: str | None = None, mode: str | None = None,
                 early_stopping: int | None = None, min_delta: float = 0.0,
                 checkpoint_dir: str | Path | None = None, save_best: bool = True,
                 callbacks: Sequence[Callback] = (), progress: bool = True, verbose: bool = True,
                 log_every: int = 10, log_images: bool = True, log_histograms: bool = False,
                 threshold: float = 0.0, ignore_index: int = 255) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(criterion):
            raise TypeError("criterion must be callable: criterion(logits, target) -> loss")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 (1 = binary), got {num_classes!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
            raise ValueError(f"early_stopping must be a positive int (patience) or None, got {early_stopping!r}")
        if not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive int, got {log_every!r}")

        self.device = torch.device(device) if device is not None else config.device()
        self.num_classes = num_classes
        self.binary = num_classes == 1
        self.ignore_index = ignore_index
        self.threshold = float(threshold)
        self.criterion = criterion
        self.aux_criterion = aux_criterion
        self.aux_weight = float(aux_weight)
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
        self.amp_dtype = self._amp_dtype(amp, cuda)
        # fp16 needs loss scaling (its range is too small for small gradients); bf16 does not
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.channels_last = cuda if channels_last == "auto" else bool(channels_last)
        self.non_blocking = cuda

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
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.early_stopping, self.min_delta = early_stopping, float(min_delta)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.save_best = save_best

        self.epoch = 0            # epochs completed
        self.global_step = 0      # optimisation steps completed
        self.history: list[dict[str, float]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stop_training = False
        self._shapes_checked = False

    # ------------------------------------------------------------------ set-up helpers
    @staticmethod
    def _amp_dtype(amp: str | bool, cuda: bool) -> torch.dtype | None:
        if amp is False or amp is None or amp == "off":
            return None
        if amp is True or amp == "auto":
            if not cuda:
                return None  # CPU autocast rarely pays off for convolutions; keep fp32 there
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp == "bf16":
            return torch.bfloat16
        if amp == "fp16":
            if not cuda:
                raise ValueError("amp='fp16' needs a CUDA device (GradScaler); use 'bf16' or False on CPU")
            return torch.float16
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or False, got {amp!r}")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        elif isinstance(batch, Mapping):
            x, y = batch["image"], batch.get("mask")
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise TypeError(f"a batch must be (images, masks), images alone or a dict; got {type(batch).__name__}")
        # pinned host memory + non_blocking lets the copy overlap with compute on CUDA
        x = x.to(self.device, non_blocking=self.non_blocking)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if y is not None:
            y = y.to(self.device, non_blocking=self.non_blocking)
        return x, y

    # ------------------------------------------------------------------ the pieces of a step
    @staticmethod
    def _split_output(output: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``logits`` or ``{"out": logits, "aux": ...}`` -> (main logits, list of aux logits)."""
        if isinstance(output, Mapping):
            if "out" not in output:
                raise ValueError(f"a dict model output needs an 'out' key, got keys {sorted(output)}")
            aux = output.get("aux")
            if aux is None:
                aux_list: list[torch.Tensor] = []
            elif isinstance(aux, torch.Tensor):
                aux_list = [aux]
            else:
                aux_list = list(aux)
            return output["out"], aux_list
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the model must return a tensor or a dict with 'out', got {type(output).__name__}")
        return output, []

    def _warn_unused_outputs(self, output: Any) -> None:
        """Say once when the model returns outputs that no loss term reads (e.g. a ``"cls"`` head
        trained by nothing), instead of ignoring them silently."""
        if isinstance(output, Mapping):
            unused = sorted(set(output) - set(self.handled_outputs))
            if unused:
                warnings.warn(
                    f"{type(self).__name__} computes no loss for the model's output(s) {unused}: "
                    "those heads will not learn. Subclass the Trainer, extend compute_loss and "
                    "handled_outputs (segtutor.tgs.tgs_trainer_class does this for 'cls').",
                    stacklevel=3,
                )

    def _match(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary logits ``[B, 1, H, W]`` -> ``[B, H, W]`` to match float masks ``[B, H, W]``."""
        if self.binary and logits.ndim == 4 and logits.shape[1] == 1:
            return logits[:, 0]
        return logits

    def check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Raise ValueError when logits and masks cannot belong together (before any backward)."""
        lg, tg = tuple(logits.shape), tuple(target.shape)
        if self.binary:
            ok = (len(lg) == 4 and lg[1] == 1 and (tg == lg[:1] + lg[2:] or tg == lg)) or \
                 (len(lg) == 3 and tg == lg)
            want = "logits [B, 1, H, W] (or [B, H, W]) with masks [B, H, W]"
        else:
            ok = len(lg) == 4 and lg[1] == self.num_classes and tg == lg[:1] + lg[2:]
            want = f"logits [B, {self.num_classes}, H, W] with masks [B, H, W]"
        if not ok:
            raise ValueError(f"model output {lg} does not match target {tg}: expected {want} "
                             f"(num_classes={self.num_classes})")
        if not self.binary and target.dtype != torch.long:
            raise TypeError(f"multi-class masks must be int64 (torch.long), got {target.dtype}")

    def compute_loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Main loss plus weighted auxiliary losses; returns (total loss, main logits)."""
        logits, aux = self._split_output(output)
        if not self._shapes_checked:
            self.check_shapes(logits, target)
            self._warn_unused_outputs(output)
            self._shapes_checked = True
        tgt = target.float() if self.binary else target
        if self.binary and tgt.ndim == 4:
            tgt = tgt[:, 0]
        loss = self.criterion(self._match(logits), tgt)
        aux_crit = self.aux_criterion or self.criterion
        for a in aux:
            loss = loss + self.aux_weight * aux_crit(self._match(a), tgt)
        return loss, logits

    def predict_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> label map ``[B, H, W]`` (long): ``logits > threshold`` or ``argmax``."""
        if self.binary:
            return (self._match(logits) > self.threshold).long()
        return logits.argmax(dim=1)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimisation step; returns the detached loss (a tensor, no host sync)."""
        x, y = self._to_device(batch)
        if y is None:
            raise ValueError("training batches must contain masks: (images, masks)")
        # the order of a hand-written loop: the last step's gradients are freed before this
        # step's activations are allocated, and the logits are not kept alive through backward
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.compute_loss(self.model(x), y)[0]
        if self.scaler.is_enabled():  # fp16: scaled loss, and a step that skips inf gradients
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        return loss.detach()

    # ------------------------------------------------------------------ loops
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over ``train_loader``; returns {"train_loss": mean over batches}."""
        if self.train_loader is None:
            raise ValueError("this Trainer has no train_loader")
        self.model.train()
        dist_utils.set_epoch(self.train_loader, epoch)
        bar = _progress(self.train_loader, self.progress, f"epoch {epoch} train")
        total, count = 0.0, 0
        pending: tuple[int, torch.Tensor] | None = None
        shows_steps = self.progress or self.logger is not None  # else no per-step loss is read
        for i, batch in enumerate(bar):
            loss = self.train_step(batch)
            # check the previous step's loss: by now its kernels have finished, so reading it does
            # not stall the GPU queue, and the error still names the step where it happened
            if pending is not None:
                total += self._check_finite_pending(pending, epoch)
                count += 1
            pending = (i, loss)
            if shows_steps and self.global_step % self.log_every == 0:
                value = float(loss)
                if self.progress:
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.lr:.2e}")
                if self.logger is not None and math.isfinite(value):
                    self.logger.log_scalar("step/train_loss", value, self.global_step)
                    self.logger.log_scalar("step/lr", self.lr, self.global_step)
        if pending is not None:
            total += self._check_finite_pending(pending, epoch)
            count += 1
        if count == 0:
            raise ValueError("train_loader produced no batches")
        mean = dist_utils.reduce_mean(total, count, self.device)
        return {"train_loss": mean}

    def _check_finite_pending(self, pending: tuple[int, torch.Tensor], epoch: int) -> float:
        i, loss = pending
        value = float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss is {value} at epoch {epoch}, step {i} of the epoch; lower the learning rate, "
                "check the inputs for NaN/inf, or clip gradients")
        return value

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Batch] | None = None, prefix: str = "") -> dict[str, float]:
        """Loss and segmentation metrics over a loader (default ``val_loader``).

        Keys: "loss", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou",
        "frequency_weighted_iou", "dice" and, for binary tasks, "tgs_map"; each prefixed with
        ``prefix``. Under torch.distributed the counts are summed over ranks first, so every rank
        gets the metrics of the whole data set.
        """
        from segtutor.metrics import ConfusionMatrix, tgs_map

        loader = self.val_loader if loader is None else loader
        if loader is None:
            raise ValueError("evaluate() needs a loader (no val_loader was given)")
        self.model.eval()
        cm = ConfusionMatrix(2 if self.binary else self.num_classes, ignore_index=self.ignore_index)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        n_batches = 0
        tgs_sum, n_images = 0.0, 0
        bar = _progress(loader, self.progress, "evaluate", leave=False)
        for batch in bar:
            x, y = self._to_device(batch)
            if y is None:
                raise ValueError("evaluation batches must contain masks: (images, masks)")
            with self._autocast():
                output = self.model(x)
                loss, logits = self.compute_loss(output, y)
            loss_sum += loss.double()
            n_batches += 1
            pred = self.predict_labels(logits.float())
            target = y.long()
            if target.ndim == 4:
                target = target[:, 0]
            cm.update(pred, target)
            if self.binary:
                tgs_sum += float(tgs_map(pred, target)) * pred.shape[0]
                n_images += pred.shape[0]
        if n_batches == 0:
            raise ValueError("the evaluation loader produced no batches")
        loss_mean = dist_utils.reduce_mean(float(loss_sum), n_batches, self.device)
        cm.all_reduce()
        metrics = cm.compute()
        out = {"loss": loss_mean}
        for key in ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "frequency_weighted_iou", "dice"):
            if key in metrics:
                out[key] = float(metrics[key])
        if self.binary:
            out["tgs_map"] = dist_utils.reduce_mean(tgs_sum, n_images, self.device)
        return {prefix + k: v for k, v in out.items()}

    @torch.no_grad()
    def predict(self, loader: Iterable[Batch], activation: str | None = None) -> torch.Tensor:
        """Logits ``[N, C, H, W]`` on the CPU for every image of ``loader`` (in loader order).

        ``activation="sigmoid"``/``"softmax"`` returns probabilities instead.
        """
        if activation not in (None, "sigmoid", "softmax"):
            raise ValueError(f"activation must be None, 'sigmoid' or 'softmax', got {activation!r}")
        self.model.eval()
        chunks = []
        for batch in _progress(loader, self.progress, "predict", leave=False):
            x, _ = self._to_device(batch)
            with self._autocast():
                logits, _ = self._split_output(self.model(x))
            logits = logits.float()
            if activation == "sigmoid":
                logits = logits.sigmoid()
            elif activation == "softmax":
                logits = logits.softmax(dim=1)
            chunks.append(logits.cpu())
        if not chunks:
            raise ValueError("predict() got an empty loader")
        return torch.cat(chunks)

    def fit(self, epochs: int, resume: str | Path | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs are completed (counting those of a resumed run).

        Returns the history: one dict per epoch with "epoch", "train_loss", "lr", "time" and, with
        a validation loader, "val_loss", "val_mean_iou", "val_pixel_accuracy", ... (binary tasks
        also "val_tgs_map"). ``resume`` is a checkpoint path written by this class.
        """
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
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
            row.update(self.train_epoch(epoch))                             # train
            if self.val_loader is not None:
                row.update(self.evaluate(self.val_loader, prefix="val_"))   # validate
            row["lr"] = lr
            row["time"] = time.perf_counter() - t0
            self.epoch = epoch
            self.history.append(row)
            self._print(row, epochs)                                        # print
            self._plot(row)                                                 # plot
            improved = self._update_best(row)                               # update
            self._update_schedule(row)
            self._save(improved)                                            # save (after the
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
        if not (self.verbose and self.is_main):
            return
        parts = [f"epoch {row['epoch']}/{epochs}"]
        # one short line: the losses, the headline metrics and the monitored one (all in history)
        shown = ("train_loss", "val_loss", "val_mean_iou", "val_tgs_map", self.monitor)
        for key in dict.fromkeys(shown):
            if key in row:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"lr {row['lr']:.2e}")
        parts.append(f"{row['time']:.1f} s")
        _write("  ".join(parts))

    def _plot(self, row: Mapping[str, float]) -> None:
        if self.logger is None:
            return
        epoch = int(row["epoch"])
        self.logger.log_scalars({k: v for k, v in row.items() if k not in ("epoch",)},
                                step=epoch, prefix="epoch/")
        if self.log_histograms:
            for name, p in self.module.named_parameters():
                self.logger.log_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)
        if self.log_images and self.val_loader is not None:
            self._log_prediction_images(epoch)

    @torch.no_grad()
    def _log_prediction_images(self, epoch: int) -> None:
        from segtutor import viz

        batch = next(iter(self.val_loader))
        x, y = self._to_device(batch)
        self.model.eval()
        with self._autocast():
            logits, _ = self._split_output(self.model(x[:4]))
        logits = logits.float()
        pred = self.predict_labels(logits).cpu()
        target = y[:4].long().cpu()
        if target.ndim == 4:
            target = target[:, 0]
        k = 2 if self.binary else self.num_classes
        images = x[:4].float().cpu()
        images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        hi = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - lo) / (hi - lo).clamp_min(1e-8)
        colour = lambda m: torch.from_numpy(viz.colorize(m, k)).permute(2, 0, 1).float()
        grid = []
        for i in range(images.shape[0]):
            grid += [images[i], colour(target[i]), colour(pred[i])]
        self.logger.log_images("val/image_target_prediction", torch.stack(grid), epoch)
        if self.binary:
            probs = self._match(logits).sigmoid().flatten().cpu()
            labels = target.flatten()
            keep = labels != self.ignore_index
            self.logger.log_pr_curve("val/pr_curve", labels[keep], probs[keep], epoch)

    def _improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def _update_best(self, row: Mapping[str, float]) -> bool:
        if self.monitor not in row:
            raise ValueError(f"monitor={self.monitor!r} is not in the epoch summary; "
                             f"choose one of {sorted(row)}")
        value = float(row[self.monitor])
        if math.isfinite(value) and self._improved(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, int(row["epoch"]), 0
            return True
        self.bad_epochs += 1
        if self.early_stopping is not None and self.bad_epochs >= self.early_stopping:
            self.stop_training = True
            if self.verbose and self.is_main:
                _write(f"early stopping: {self.monitor} has not improved for {self.bad_epochs} "
                       f"epochs (best {self.best_value:.4f} at epoch {self.best_epoch})")
        return False

    def _save(self, improved: bool) -> None:
        if self.checkpoint_dir is None or not self.is_main:
            return
        self.save_checkpoint(self.checkpoint_dir / "last.pt")
        if improved and self.save_best:
            self.save_checkpoint(self.checkpoint_dir / "best.pt")

    def _update_schedule(self, row: Mapping[str, float]) -> None:
        if self.scheduler is None or self.scheduler_interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row[self.monitor])
        else:
            self.scheduler.step()

    # ------------------------------------------------------------------ checkpoints
    def state_extra(self) -> dict[str, Any]:
        """Trainer state beyond model/optimizer/scheduler: counters, history, best metric, and
        the shuffling generator of the train loader (so a resumed run sees the same batches)."""
        extra: dict[str, Any] = {
            "global_step": self.global_step,
            "history": [dict(r) for r in self.history],
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }
        gen = getattr(self.train_loader, "generator", None)
        if isinstance(gen, torch.Generator):
            extra["loader_generator"] = gen.get_state()
        return extra

    def save_checkpoint(self, path: str | Path) -> Path:
        """Atomically write everything needed to continue this run (rank 0 only)."""
        if not self.is_main:
            return Path(path)
        return ckpt.save_checkpoint(path, model=self.module, optimizer=self.optimizer,
                                    scheduler=self.scheduler, scaler=self.scaler,
                                    epoch=self.epoch, **self.state_extra())

    def load_checkpoint(self, path: str | Path, weights_only_model: bool = False) -> dict[str, Any]:
        """Restore a checkpoint written by :meth:`save_checkpoint` (every rank reads it).

        The optimizer and scheduler continue where the checkpoint stopped, with the
        checkpoint's learning rate: when the optimizer was built with another one, a warning
        says so (to train the saved weights with a new learning rate, load them with
        ``weights_only_model=True`` and call :meth:`fit` without ``resume``).

        Raises :class:`segtutor.train.checkpoint.CheckpointError` (a ValueError) naming the
        file when it is damaged, is not a checkpoint of this class, or holds another model.
        """
        state = ckpt.load_checkpoint(path, map_location=self.device)
        missing = [k for k in ("model", "epoch", "rng") if k not in state]
        if missing and not (weights_only_model and "model" in state):
            raise ckpt.CheckpointError(f"{path} is not a Trainer checkpoint: it has no "
                                       f"{', '.join(map(repr, missing))} entry")
        try:
            self.module.load_state_dict(state["model"])
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ckpt.CheckpointError(f"checkpoint {path} holds the weights of another model: "
                                       f"{first}") from None
        if weights_only_model:
            return state
        asked = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        try:
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler") is not None:
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError, TypeError) as err:
            raise ckpt.CheckpointError(f"checkpoint {path} does not fit this trainer's optimizer, "
                                       f"scheduler or scaler: {err}") from None
        saved = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        if state.get("optimizer") is not None and any(
                not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) for a, b in zip(asked, saved)):
            warnings.warn(
                f"resuming from {path}: the optimizer was built with learning rate "
                f"{asked[0]:g}, the checkpoint's run used {saved[0]:g}; the checkpoint's is kept "
                f"(now {self.lr:g}) so that the run continues exactly. To train these weights "
                "with a new learning rate, load them with load_checkpoint(path, "
                "weights_only_model=True) and call fit() without resume.",
                UserWarning, stacklevel=3)
        self.epoch = int(state["epoch"])
        self.global_step = int(state.get("global_step", 0))
        self.history = [dict(r) for r in state.get("history", [])]
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        gen = getattr(self.train_loader, "generator", None)
        if isinstance(gen, torch.Generator) and "loader_generator" in state:
            gen.set_state(state["loader_generator"].cpu())
        ckpt.set_rng_state(_to_cpu(state["rng"]))
        return state


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _progress(iterable: Iterable[Any], enabled: bool, desc: str, leave: bool = True) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    total = len(iterable) if hasattr(iterable, "__len__") else None
    return tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True)


def _write(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)  # prints without breaking an open progress bar


class DeviceLoader:
    """Batches sliced from tensors that live on the device: no DataLoader, no host-to-device copy.

    For small data sets (the whole TGS training set, 4000 images of 101x101, is about 160 MB in
    float32) keeping everything in GPU memory removes the CPU from the loop entirely; a GPU
    batch augmentation ``augment(images, masks) -> (images, masks)`` then runs on the device too.

    Args:
        images: ``[N, C, H, W]`` (or ``[N, H, W]``, given C=1) float.
        masks: ``[N, H, W]`` long (multi-class) or float (binary).
        batch_size, shuffle, seed, drop_last: as for a DataLoader; ``generator`` is kept as an
            attribute so that the Trainer's checkpoints capture the shuffling state.
        device: default ``segtutor.config.device()``.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, device: torch.device | str | None = None,
                 augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 drop_last: bool = False) -> None:
        if not isinstance(images, torch.Tensor) or not isinstance(masks, torch.Tensor):
            raise TypeError("images and masks must be tensors")
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"images must be [N, C, H, W] and masks [N, H, W] with the same N, H, W; "
                             f"got {tuple(images.shape)} and {tuple(masks.shape)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.device = torch.device(device) if device is not None else config.device()
        self.images = images.to(self.device)
        self.masks = masks.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)  # CPU generator: cheap, checkpointable

    @classmethod
    def from_dataset(cls, dataset: Any, batch_size: int, **kwargs: Any) -> DeviceLoader:
        """Stack every ``(image, mask)`` of a map-style dataset once and keep them on the device."""
        items = [dataset[i] for i in range(len(dataset))]
        images = torch.stack([torch.as_tensor(im) for im, _ in items])
        masks = torch.stack([torch.as_tensor(m) for _, m in items])
        return cls(images, masks, batch_size, **kwargs)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = self.images.index_select(0, idx), self.masks.index_select(0, idx)
            if self.augment is not None:
                x, y = self.augment(x, y)
            yield x, y
