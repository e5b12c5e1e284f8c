"""The one reader of the models' output convention.

Every model of :mod:`segtutor.models` returns logits ``[B, K, H, W]``, or in training mode (and
for the ResNet34 U-Net's ``return_cls=True``) a dict, torchvision style::

    {"out": logits [B, K, H, W],            # the prediction
     "aux": logits or [logits, ...],        # auxiliary / deep-supervision heads, input size
     "cls": [B]}                            # the empty-image logit (ResNet34 U-Net, classify=True)

The models build their output with :func:`aux_output`; code that needs one part asks
:func:`split_output`, :func:`main_output` or :func:`aux_outputs` instead of taking the dict apart
itself, so that the convention lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["aux_output", "aux_outputs", "main_output", "output_keys", "split_output"]


def aux_output(
    out: Tensor, aux: Tensor | list[Tensor] | None, training: bool, **extra: Tensor
) -> Tensor | dict[str, Any]:
    """The output of a model with auxiliary outputs.

    Eval mode: the main logits ``out [B, K, H, W]`` as a tensor. Training mode: a dict
    ``{"out": out, "aux": aux, **extra}`` (torchvision style) where ``aux`` is one logits tensor
    at the input size or a list of them (deep supervision), so a loss can weight each; a tensor
    when there is nothing besides ``out``.
    """
    if not training or (aux is None and not extra):
        return out
    result: dict[str, Any] = {"out": out}
    if aux is not None:
        result["aux"] = aux
    result.update(extra)
    return result


def split_output(output: Tensor | Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """``logits`` or ``{"out": logits, ...}`` -> ``(logits, extras)``.

    ``extras`` holds every other entry of a dict output as it is (``"aux"``, ``"cls"``, ...);
    it is empty for a tensor. Raises TypeError for anything else and ValueError for a dict
    without ``"out"``.
    """
    if isinstance(output, Tensor):
        return output, {}
    if isinstance(output, Mapping):
        if "out" not in output:
            raise ValueError(f"a dict model output needs an 'out' key, got keys {sorted(output)}")
        return output["out"], {k: v for k, v in output.items() if k != "out"}
    raise TypeError(
        f"a model output must be a logits tensor or a dict with 'out', got {type(output).__name__}"
    )


def main_output(output: Tensor | Mapping[str, Any]) -> Tensor:
    """The main logits ``[B, K, H, W]`` of a model output (see :func:`split_output`)."""
    return split_output(output)[0]


def aux_outputs(output: Tensor | Mapping[str, Any]) -> list[Tensor]:
    """The auxiliary logits of a model output as a list (empty when there are none): ``"aux"``
    may hold one tensor (PSPNet, DeepLab) or a list of them (deep supervision)."""
    aux = split_output(output)[1].get("aux")
    if aux is None:
        return []
    if isinstance(aux, Tensor):
        return [aux]
    if isinstance(aux, (list, tuple)) and all(isinstance(a, Tensor) for a in aux):
        return list(aux)
    raise TypeError(f"'aux' must be a tensor or a list of tensors, got {type(aux).__name__}")


def output_keys(output: Tensor | Mapping[str, Any]) -> tuple[str, ...]:
    """The parts a model output holds: ``("out",)`` for a tensor, the dict's keys otherwise."""
    _, extras = split_output(output)
    return ("out", *extras)
