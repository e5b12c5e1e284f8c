"""segtutor: the companion package of the segtutor book on semantic segmentation in PyTorch.

Submodules are imported lazily (``segtutor.losses``, ``segtutor.models`` ...) so that
``import segtutor`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "config",
    "ops",
    "losses",
    "metrics",
    "data",
    "models",
    "train",
    "monitor",
    "viz",
    "crf",
    "postprocess",
    "cli",
    "tgs",
    "claims",
    "progress",
    "results",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'segtutor' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
