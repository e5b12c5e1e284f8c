"""Data: synthetic sets, datasets, joint image+mask transforms, RLE and the Kaggle TGS layout.

Submodules are imported on first use of one of their names, so that ``import segtutor.data``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # synthetic.py
    "make_shapes": "synthetic",
    "make_tgs_like": "synthetic",
    "Shapes": "synthetic",
    "TGSLike": "synthetic",
    # datasets.py
    "InMemoryDataset": "datasets",
    "SegmentationDataset": "datasets",
    "read_label_png": "datasets",
    "read_image": "datasets",
    "apply_pair_transform": "datasets",
    # loaders.py
    "make_loader": "loaders",
    "seed_worker": "loaders",
    "DeviceLoader": "loaders",
    # rle.py
    "rle_encode": "rle",
    "rle_decode": "rle",
    # tgs.py
    "TGSSaltDataset": "tgs",
    "coverage_folds": "tgs",
    "coverage_class": "tgs",
    "write_tgs_layout": "tgs",
}

_SUBMODULES = {"synthetic", "datasets", "loaders", "rle", "transforms", "tgs"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'segtutor.data' has no attribute {name!r}")


__all__ = [
    "DeviceLoader",
    "InMemoryDataset",
    "SegmentationDataset",
    "Shapes",
    "TGSLike",
    "TGSSaltDataset",
    "apply_pair_transform",
    "coverage_class",
    "coverage_folds",
    "datasets",
    "loaders",
    "make_loader",
    "make_shapes",
    "make_tgs_like",
    "read_image",
    "read_label_png",
    "rle",
    "rle_decode",
    "rle_encode",
    "seed_worker",
    "synthetic",
    "tgs",
    "transforms",
    "write_tgs_layout",
]
