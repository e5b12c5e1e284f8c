"""One logging interface for every backend: scalars, images, histograms, text, hyper-parameters.

Training code calls a :class:`Logger`; which backends receive the calls (TensorBoard event files,
a live visdom server or its offline log, the console) is decided where the logger is built.
Every method has a do-nothing default, so a backend implements only what it can show.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import numpy as np
import torch


def to_image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images as a float tensor ``[N, 3, H, W]`` in [0, 1] on the CPU.

    Accepts ``[H, W]``, ``[N, H, W]`` (grey), ``[N, 1, H, W]``, ``[N, 3, H, W]``; grey is
    repeated to three channels, values are clipped to [0, 1].
    """
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be [N, 1|3, H, W], [N, H, W] or [H, W]; got {tuple(x.shape)}"
        )
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0.0, 1.0).contiguous()


class Logger:
    """The interface. ``step`` is the global optimisation step (or the epoch, as the tag says)."""

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """One number, e.g. ``("loss/train", 0.31, 120)``."""

    def log_scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Several numbers at the same step; non-finite and non-numeric values are skipped."""
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(float(value)):
                self.log_scalar(prefix + key, float(value), step)

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        """A batch of images ``[N, 3, H, W]`` float in [0, 1] shown as one grid."""

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """The distribution of a tensor's values (weights, gradients)."""

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Free text (a model summary, the command line)."""

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Hyper-parameters of the run with its final metrics."""

    def log_pr_curve(self, tag: str, labels: torch.Tensor, probs: torch.Tensor, step: int) -> None:
        """Precision-recall curve of a binary task: ``labels`` in {0, 1}, ``probs`` in [0, 1]."""

    def flush(self) -> None:
        """Push buffered records out."""

    def close(self) -> None:
        """Flush and release files or connections."""
        self.flush()

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConsoleLogger(Logger):
    """Prints scalars as ``step 120  loss/train 0.3100``; every ``every``-th call per tag."""

    def __init__(self, stream: TextIO | None = None, every: int = 1) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.stream = stream
        self.every = every
        self._calls: dict[str, int] = {}

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        n = self._calls.get(tag, 0)
        self._calls[tag] = n + 1
        if n % self.every == 0:
            print(f"step {step:>6d}  {tag} {value:.4g}", file=self.stream or sys.stdout)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        print(f"[{tag}] {text}", file=self.stream or sys.stdout)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        hp = ", ".join(f"{k}={v}" for k, v in hparams.items())
        me = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"hparams {hp} -> {me}", file=self.stream or sys.stdout)


class MultiLogger(Logger):
    """Fans every call out to several loggers; a backend that raises is warned about and dropped,
    so one broken backend never stops training."""

    def __init__(self, loggers: Iterable[Logger]) -> None:
        self.loggers = [lg for lg in loggers if lg is not None]
        for lg in self.loggers:
            if not isinstance(lg, Logger):
                raise TypeError(f"loggers must be Logger instances, got {type(lg).__name__}")

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for lg in list(self.loggers):
            try:
                getattr(lg, method)(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - monitoring must never end the run
                warnings.warn(
                    f"{type(lg).__name__}.{method} failed ({err!r}); "
                    "this backend is switched off for the rest of the run",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.loggers.remove(lg)

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self._each("log_scalar", tag, value, step)

    def log_scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        self._each("log_scalars", values, step, prefix)

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        self._each("log_images", tag, images, step)

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self._each("log_histogram", tag, values, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self._each("log_text", tag, text, step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self._each("log_hparams", hparams, metrics)

    def log_pr_curve(self, tag: str, labels: torch.Tensor, probs: torch.Tensor, step: int) -> None:
        self._each("log_pr_curve", tag, labels, probs, step)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")
