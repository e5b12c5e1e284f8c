"""The sizes of the TGS data are defined once, and everything that needs them imports them."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from segtutor import tgs
from segtutor.data import constants, transforms

PACKAGE = Path(__file__).resolve().parents[1] / "segtutor"


def test_each_size_is_assigned_in_one_module_only():
    for name in ("TGS_SIZE", "MODEL_SIZE", "PADDED_SIZE"):
        assigned = sorted(
            str(path.relative_to(PACKAGE))
            for path in PACKAGE.rglob("*.py")
            if re.search(rf"^{name}\s*=", path.read_text(), flags=re.MULTILINE)
        )
        assert assigned == ([] if name == "PADDED_SIZE" else ["data/constants.py"]), name


def test_the_sizes_are_the_competition_and_network_sizes():
    assert (constants.TGS_SIZE, constants.MODEL_SIZE) == (101, 128)
    assert (tgs.TGS_SIZE, tgs.MODEL_SIZE) == (101, 128)
    x = torch.rand(2, 1, 101, 101)
    assert transforms.pad_to_128(x).shape[-2:] == (128, 128)
    assert torch.equal(transforms.unpad_from_128(transforms.pad_to_128(x)), x)
