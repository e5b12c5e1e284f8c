"""Monitoring: one :class:`Logger` interface with TensorBoard, visdom and console backends.

``start_visdom`` starts a local visdom server; ``read_scalars`` reads TensorBoard event files back;
``replay`` loads a visdom offline log into a server.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ConsoleLogger, Logger, MultiLogger, to_image_batch

_LAZY = {
    "TensorBoardLogger": "tensorboard",
    "read_scalars": "tensorboard",
    "read_images": "tensorboard",
    "VisdomLogger": "visdom",
    "replay": "visdom",
    "start_visdom": "server",
    "VisdomServer": "server",
    "ensure_assets": "assets",
    "log_prediction_images": "images",
    "prediction_grid": "images",
}


def __getattr__(name: str) -> Any:
    # backends import tensorboardX / visdom only when used, so `import segtutor.monitor` is cheap
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConsoleLogger",
    "Logger",
    "MultiLogger",
    "TensorBoardLogger",
    "VisdomLogger",
    "VisdomServer",
    "ensure_assets",
    "log_prediction_images",
    "prediction_grid",
    "read_images",
    "read_scalars",
    "replay",
    "start_visdom",
    "to_image_batch",
]
