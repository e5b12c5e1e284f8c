"""Learning-rate schedules, snapshot saving at the end of each cosine cycle, and the LR range test.

The schedules are PyTorch's own schedulers (or a ``LambdaLR``) behind names that say what they do:

- :func:`step_lr`: multiply by ``gamma`` every ``step_size`` steps.
- :func:`poly_lr`: ``lr_t = (lr_0 - lr_min) (1 - t/T)^p + lr_min``, the "poly" policy of DeepLab
  (Chen et al., TPAMI 2018) with ``p = 0.9``.
- :func:`one_cycle`: warm up to ``max_lr`` then anneal far below the start (Smith & Topin 2019).
- :func:`cosine_warm_restarts`: SGDR (Loshchilov & Hutter, ICLR 2017),
  ``lr_t = lr_min + (lr_0 - lr_min) (1 + cos(pi t_cur / T_i)) / 2``, with ``T_i`` multiplied by
  ``cycle_mult`` at each restart.

Every scheduler counts in whatever unit it is stepped in; with
``Trainer(scheduler_interval="step")`` that unit is one optimisation step.
:class:`SnapshotSaver` keeps the weights at the end of every cosine cycle, where the learning rate
is lowest and the model sits in a minimum, for a snapshot ensemble (Huang et al., ICLR 2017).
:func:`lr_range_test` is the LR range test of Smith (WACV 2017): raise the learning rate
exponentially for a few hundred steps and watch the loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from segtutor import checks, config
from segtutor.train.checkpoint import atomic_save, unwrap
from segtutor.train.loop import fused_option
from segtutor.train.slices import fit_resumable
from segtutor.train.trainer import Callback, Trainer


def step_lr(optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> sched.StepLR:
    """``lr_t = lr_0 * gamma ** (t // step_size)``."""
    checks.positive_int("step_size", step_size)
    return sched.StepLR(optimizer, step_size=step_size, gamma=gamma)


def poly_lr(
    optimizer: Optimizer, total_steps: int, power: float = 0.9, min_lr: float = 0.0
) -> sched.LambdaLR:
    """``lr_t = (lr_0 - min_lr) * (1 - t / total_steps) ** power + min_lr``.

    ``min_lr`` after the end.
    """
    checks.positive_int("total_steps", total_steps)
    checks.positive_float("power", power)

    def factor_for(base: float) -> Callable[[int], float]:
        floor = min_lr / base if base > 0 else 0.0
        return lambda t: (1 - floor) * (1 - min(t, total_steps) / total_steps) ** power + floor

    return sched.LambdaLR(optimizer, [factor_for(g["lr"]) for g in optimizer.param_groups])


def one_cycle(
    optimizer: Optimizer,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> sched.OneCycleLR:
    """Start at ``max_lr / div_factor``, rise (cosine) to ``max_lr`` over ``pct_start`` of the
    steps, then fall (cosine) to ``max_lr / div_factor / final_div_factor``. Momentum moves the
    other way."""
    checks.positive_int("total_steps", total_steps)
    return sched.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )


def cosine_warm_restarts(
    optimizer: Optimizer, cycle_steps: int, cycle_mult: int = 1, min_lr: float = 0.0
) -> sched.CosineAnnealingWarmRestarts:
    """SGDR: cosine from the optimizer's LR down to ``min_lr`` over ``cycle_steps``, then restart;
    each cycle is ``cycle_mult`` times longer than the one before."""
    checks.positive_int("cycle_steps", cycle_steps)
    checks.positive_int("cycle_mult", cycle_mult)
    return sched.CosineAnnealingWarmRestarts(
        optimizer, T_0=cycle_steps, T_mult=cycle_mult, eta_min=min_lr
    )


def fit_cosine(
    model: torch.nn.Module,
    criterion: Callable[..., torch.Tensor],
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    epochs: int,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    name: str | None = None,
    **options: Any,
) -> tuple[Trainer, list[dict[str, float]]]:
    """Train ``model`` for ``epochs`` epochs with AdamW (fused on CUDA) and a cosine learning
    rate that falls from ``lr`` to 0 over the whole run, stepped after every batch (no warm-up,
    no restart): the short from-scratch recipe the architecture chapters share.

    ``train_loader`` must have a length (batches per epoch). ``options`` go to :class:`Trainer`
    (``num_classes`` is required; ``aux_weight``, ``device``, ``progress`` ...). Returns the
    trainer and its history (one dict per epoch, ``"lr"`` = the rate at the epoch's start).

    ``name`` (one per fit of a chapter, e.g. ``"fcn8s"``): a full-size run of the chapter that
    was stopped continues this fit where it stopped (:func:`segtutor.train.fit_resumable`);
    without a full-size run being recorded it changes nothing.
    """
    checks.positive_int("epochs", epochs)
    device = options.get("device")
    fused = fused_option(device if device is not None else config.device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    scheduler = sched.CosineAnnealingLR(optimizer, T_max=epochs * len(train_loader))
    trainer = Trainer(
        model,
        criterion,
        optimizer,
        train_loader,
        val_loader,
        scheduler=scheduler,
        scheduler_interval="step",
        **options,
    )
    if name is None:
        return trainer, trainer.fit(epochs)
    return trainer, fit_resumable(trainer, epochs, name)


def cycle_ends(
    cycle_len: int, cycle_mult: int = 1, total: int | None = None, cycles: int | None = None
) -> list[int]:
    """Where cosine cycles end, counted in the scheduler's unit (1-based: after that many units).

    ``cycle_ends(2, 2, total=14) == [2, 6, 14]``. Give ``total`` (ends up to it) or ``cycles``.
    """
    checks.positive_int("cycle_len", cycle_len)
    checks.positive_int("cycle_mult", cycle_mult)
    if (total is None) == (cycles is None):
        raise ValueError("give exactly one of total= or cycles=")
    ends, end, length = [], 0, cycle_len
    while True:
        end += length
        if (total is not None and end > total) or (cycles is not None and len(ends) == cycles):
            return ends
        ends.append(end)
        length *= cycle_mult


def lr_sequence(
    make_scheduler: Callable[[Optimizer], Any], steps: int, lr: float = 0.1
) -> list[float]:
    """The learning rates a scheduler produces over ``steps`` steps (for plots and tests).

    ``make_scheduler`` receives a throw-away SGD optimizer whose LR is ``lr``.
    """
    checks.positive_int("steps", steps)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


class SnapshotSaver(Callback):
    """Keep the model's weights at the end of every cosine cycle (snapshot ensembles).

    Cycles are counted in **epochs** here: ``cycle_epochs`` for the first, times ``cycle_mult``
    for each next one; run the scheduler per step with
    ``cosine_warm_restarts(opt, cycle_epochs * steps_per_epoch, cycle_mult)`` so that cycles end
    exactly at epoch boundaries. Snapshots are kept in memory (``self.snapshots``, CPU state dicts)
    and, with ``directory``, written atomically as ``snapshot_<k>.pt``. ``last`` keeps only the
    most recent ``last`` snapshots.
    """

    def __init__(
        self,
        cycle_epochs: int,
        cycle_mult: int = 1,
        directory: str | Path | None = None,
        last: int | None = None,
    ) -> None:
        self.cycle_epochs = checks.positive_int("cycle_epochs", cycle_epochs)
        self.cycle_mult = checks.positive_int("cycle_mult", cycle_mult)
        self.directory = Path(directory) if directory is not None else None
        self.last = last
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.epochs: list[int] = []
        self.paths: list[Path] = []

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        ends = cycle_ends(self.cycle_epochs, self.cycle_mult, total=epoch)
        if epoch not in ends:
            return
        state = {
            k: v.detach().cpu().clone() for k, v in unwrap(trainer.module).state_dict().items()
        }
        self.snapshots.append(state)
        self.epochs.append(epoch)
        if self.directory is not None and trainer.is_main:
            # numbered by the cycle, not by how many this object saw: a run resumed from a
            # checkpoint in a later cycle continues the numbering of the files on disk
            path = self.directory / f"snapshot_{len(ends)}.pt"
            atomic_save(
                {"model": state, "epoch": epoch, **{k: float(v) for k, v in row.items()}}, path
            )
            self.paths.append(path)
        if self.last is not None and len(self.snapshots) > self.last:
            self.snapshots.pop(0)
            self.epochs.pop(0)


# ---------------------------------------------------------------------------- LR range test
@dataclass
class LRRangeResult:
    """What :func:`lr_range_test` measured: ``lrs`` and ``losses`` (smoothed), ``raw_losses``."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggested_lr: float
    diverged_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def plot(self, ax: Any = None, skip_start: int = 5) -> Any:
        """Loss against learning rate (log axis) with the suggestion marked; returns the Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5.5, 3.5))
        else:
            fig = ax.figure
        lrs, losses = self.lrs[skip_start:], self.losses[skip_start:]
        ax.plot(self.lrs, self.raw_losses, color="0.8", lw=0.8, label="loss per step")
        ax.plot(lrs, losses, color="C0", label="smoothed loss")
        ax.axvline(
            self.suggested_lr, color="C3", ls="--", label=f"suggested lr {self.suggested_lr:.1e}"
        )
        ax.set_xscale("log")
        finite = [v for v in losses if math.isfinite(v)]
        if finite:
            lo, hi = min(finite), finite[0]
            ax.set_ylim(lo - 0.1 * abs(hi - lo) - 1e-6, max(hi, lo) + 0.6 * abs(hi - lo) + 1e-6)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title("LR range test")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader produced no batches")


def lr_range_test(
    trainer: Trainer,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
    loader: Iterable[Any] | None = None,
) -> LRRangeResult:
    """Smith's LR range test with the trainer's own model, loss and optimizer.

    The learning rate grows geometrically from ``start_lr`` to ``end_lr`` over ``num_steps``
    training steps; the loss is smoothed with a bias-corrected exponential moving average
    (``beta``), and the test stops early once it exceeds ``diverge`` times its minimum. The
    suggestion is the LR where the smoothed loss falls fastest (steepest negative slope against
    log LR), a common reading of the plot; pick a little below where the loss bottoms out.
    The model and optimizer are restored afterwards: the test does not train the model.
    """
    if not (0 < start_lr < end_lr):
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr!r}, {end_lr!r}")
    checks.positive_int("num_steps", num_steps, minimum=3)
    checks.number("beta", beta, 0.0, below=1.0)
    loader = trainer.train_loader if loader is None else loader
    if loader is None:
        raise ValueError("lr_range_test needs a loader (the trainer has no train_loader)")

    model_state = copy.deepcopy(trainer.module.state_dict())
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    scheduler, trainer.scheduler = trainer.scheduler, None  # the test sets the LR itself
    step0 = trainer.global_step
    ratio = end_lr / start_lr
    lrs, raw, smooth = [], [], []
    avg, best, diverged = 0.0, math.inf, None
    trainer.model.train()
    try:
        batches = _cycle(loader)
        for i in range(num_steps):
            lr = start_lr * ratio ** (i / (num_steps - 1))
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            loss = float(trainer.train_step(next(batches)))
            lrs.append(lr)
            raw.append(loss)
            if not math.isfinite(loss):
                smooth.append(math.inf)
                diverged = lr
                break
            avg = beta * avg + (1 - beta) * loss
            value = avg / (1 - beta ** (i + 1))
            smooth.append(value)
            best = min(best, value)
            if i > 0 and value > diverge * best:
                diverged = lr
                break
    finally:
        trainer.module.load_state_dict(model_state)
        trainer.optimizer.load_state_dict(opt_state)
        trainer.scheduler = scheduler
        trainer.global_step = step0
    return LRRangeResult(lrs, smooth, raw, _steepest(lrs, smooth), diverged)


def _steepest(lrs: list[float], losses: list[float]) -> float:
    """LR at the most negative slope d(loss)/d(log lr), ignoring the noisy first steps and
    everything after the minimum."""
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if len(finite) < 3:
        return lrs[0]
    end = min(finite, key=lambda i: losses[i])
    start = min(len(lrs) // 10, max(end - 2, 0))
    if end - start < 2:
        return lrs[end] / 10
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(start, end)
    ]
    k = min(range(len(slopes)), key=lambda j: slopes[j])
    return lrs[start + k]
