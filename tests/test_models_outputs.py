"""The output convention's one owner (segtutor/models/outputs.py)."""

from __future__ import annotations

import pytest
import torch

from segtutor.models import blocks
from segtutor.models.outputs import (
    aux_output,
    aux_outputs,
    main_output,
    output_keys,
    split_output,
)


def test_split_output_of_a_tensor_and_of_a_dict():
    out, a1, a2, cls = (
        torch.zeros(2, 1, 4, 4),
        torch.ones(2, 1, 4, 4),
        torch.ones(2, 1, 4, 4),
        torch.zeros(2),
    )
    assert split_output(out) == (out, {})
    main, extras = split_output({"out": out, "aux": [a1, a2], "cls": cls})
    assert main is out and extras == {"aux": [a1, a2], "cls": cls}
    assert main_output({"out": out, "aux": a1}) is out and main_output(out) is out
    assert aux_outputs(out) == [] and aux_outputs({"out": out}) == []
    assert aux_outputs({"out": out, "aux": a1}) == [a1]  # PSPNet, DeepLab
    assert aux_outputs({"out": out, "aux": (a1, a2)}) == [a1, a2]  # deep supervision
    assert output_keys(out) == ("out",)
    assert output_keys({"out": out, "aux": a1, "cls": cls}) == ("out", "aux", "cls")


def test_bad_outputs_are_named():
    with pytest.raises(ValueError, match=r"needs an 'out' key, got keys \['aux'\]"):
        split_output({"aux": torch.zeros(1)})
    with pytest.raises(TypeError, match="got list"):
        main_output([torch.zeros(1)])
    with pytest.raises(TypeError, match="'aux' must be a tensor or a list of tensors"):
        aux_outputs({"out": torch.zeros(1), "aux": "x"})


def test_aux_output_builds_what_split_output_reads():
    out, aux, cls = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3), torch.zeros(1)
    assert aux_output(out, aux, training=False, cls=cls) is out  # eval: logits alone
    assert aux_output(out, None, training=True) is out  # nothing besides out
    built = aux_output(out, [aux], training=True, cls=cls)
    assert built == {"out": out, "aux": [aux], "cls": cls}
    assert main_output(built) is out and aux_outputs(built) == [aux]
    assert blocks.aux_output is aux_output  # still importable from the blocks
