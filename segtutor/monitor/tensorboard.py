"""TensorBoard backend (tensorboardX ``SummaryWriter``) and readers for the event files it writes.

Event files go under ``runs/<name>``; watch them live with
``tensorboard --logdir runs --host 127.0.0.1`` and open http://127.0.0.1:6006. The readers use
TensorBoard's own event reader, so a chapter can plot the curves it logged in the built book.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from segtutor.monitor.base import Logger, to_image_batch


class TensorBoardLogger(Logger):
    """Writes scalars, image grids, histograms, text, hyper-parameters and PR curves.

    Args:
        logdir: the run's folder, e.g. ``runs/unet-shapes``; created if missing.
        images_per_row: columns of the image grid (3 = image, target, prediction).
        flush_secs: how often tensorboardX writes its buffer to disk.
    """

    def __init__(self, logdir: str | Path, images_per_row: int = 3, flush_secs: int = 10) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.images_per_row = images_per_row
        self.writer = SummaryWriter(logdir=str(self.logdir), flush_secs=flush_secs)

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), int(step))

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        from torchvision.utils import make_grid

        grid = make_grid(to_image_batch(images), nrow=self.images_per_row, padding=2, pad_value=1.0)
        self.writer.add_image(tag, grid, int(step), dataformats="CHW")

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.writer.add_histogram(
            tag, torch.as_tensor(values).detach().float().cpu().numpy(), int(step)
        )

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, int(step))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        plain = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()
        }
        self.writer.add_hparams(
            plain, {f"hparam/{k}": float(v) for k, v in metrics.items()}, name="hparams"
        )

    def log_pr_curve(self, tag: str, labels: torch.Tensor, probs: torch.Tensor, step: int) -> None:
        self.writer.add_pr_curve(
            tag,
            torch.as_tensor(labels).flatten().cpu().numpy().astype(np.int64),
            torch.as_tensor(probs).flatten().float().cpu().numpy(),
            int(step),
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class ScalarSeries(NamedTuple):
    """One logged scalar: ``steps`` and ``values`` in step order, ``wall_times`` in seconds."""

    steps: list[int]
    values: list[float]
    wall_times: list[float]


def _event_dirs(logdir: Path) -> list[Path]:
    if not logdir.exists():
        raise FileNotFoundError(f"log directory {logdir} does not exist")
    dirs = sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")})
    if not dirs:
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    return dirs


def _accumulators(logdir: str | Path) -> list[tuple[str, Any]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(logdir)
    out = []
    for d in _event_dirs(root):
        # size_guidance 0 = keep every record (the default samples 1000 scalars, 4 images)
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
        acc.Reload()
        rel = d.relative_to(root).as_posix()
        out.append(("" if rel == "." else rel + "/", acc))
    return out


def read_scalars(logdir: str | Path) -> dict[str, ScalarSeries]:
    """Every scalar under ``logdir`` (sub-runs' tags are prefixed with their folder).

    Returns ``{tag: ScalarSeries(steps, values, wall_times)}`` with steps ascending; if a step was
    logged twice (a resumed run), the later record wins.
    """
    result: dict[str, ScalarSeries] = {}
    for prefix, acc in _accumulators(logdir):
        for tag in acc.Tags().get("scalars", []):
            by_step: dict[int, tuple[float, float]] = {}
            for ev in acc.Scalars(tag):
                by_step[int(ev.step)] = (float(ev.value), float(ev.wall_time))
            steps = sorted(by_step)
            result[prefix + tag] = ScalarSeries(
                steps, [by_step[s][0] for s in steps], [by_step[s][1] for s in steps]
            )
    return result


def read_images(logdir: str | Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Every logged image: ``{tag: [(step, array [H, W, 3] uint8), ...]}``."""
    from PIL import Image

    result: dict[str, list[tuple[int, np.ndarray]]] = {}
    for prefix, acc in _accumulators(logdir):
        for tag in acc.Tags().get("images", []):
            result[prefix + tag] = [
                (
                    int(ev.step),
                    np.asarray(Image.open(io.BytesIO(ev.encoded_image_string)).convert("RGB")),
                )
                for ev in acc.Images(tag)
            ]
    return result
