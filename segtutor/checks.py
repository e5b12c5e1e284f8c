"""Argument checks for the package's public entry points: one rule, one wording.

The rule for ``bool``: it is never accepted where an int or a float is asked for. ``True`` is an
``int`` to Python, so ``positive_int("epochs", True)`` would otherwise pass as 1; a flag passed
in the wrong position is far more likely than an intended count of one. NumPy integers and
floats are accepted where Python ones are (a value read from an array is still a number) and
returned as Python ``int``/``float``.

A value of the wrong type raises :class:`ArgumentTypeError`, which is a ``TypeError`` and also a
``ValueError``, so that callers catching ``ValueError`` for bad input (the command line turns it
into exit code 2) catch every bad argument. A value of the right type but out of range raises
``ValueError``. Every message names the argument, says what was expected and shows what came.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence
from typing import TypeVar

__all__ = [
    "ArgumentTypeError",
    "integer",
    "non_negative_int",
    "number",
    "one_of",
    "pair",
    "positive_float",
    "positive_int",
    "probability",
]

T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (both a TypeError and a ValueError, see the module)."""


def _int_wording(minimum: int | None) -> str:
    if minimum is None:
        return "an int"
    if minimum == 1:
        return "a positive int"
    if minimum == 0:
        return "a non-negative int"
    return f"an int >= {minimum}"


def integer(
    name: str, value: object, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as a Python int in ``[minimum, maximum]`` (None = unbounded).

    Accepts ``int`` and NumPy integers, never ``bool``; raises :class:`ArgumentTypeError` for
    another type and ``ValueError`` outside the bounds, naming ``name``.
    """
    wording = _int_wording(minimum)
    if maximum is not None:
        wording = f"an int in [{minimum}, {maximum}]" if minimum is not None else wording
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be {wording}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {wording}, got {value!r}")
    return value


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (default 1): a count, a size, a number of epochs."""
    return integer(name, value, minimum)


def non_negative_int(name: str, value: object) -> int:
    """``value`` as an int >= 0: a seed, a number of workers, a size in pixels that may be 0."""
    return integer(name, value, 0)


def _number_wording(
    minimum: float | None, maximum: float | None, above: float | None, below: float | None
) -> str:
    """ "a number in [0, 1]", "a number > 0", "a finite number"... for the bounds given."""
    low = f"[{minimum:g}" if minimum is not None else f"({above:g}" if above is not None else None
    high = f"{maximum:g}]" if maximum is not None else f"{below:g})" if below is not None else None
    if low and high:
        return f"a number in {low}, {high}"
    if low:
        return f"a number {'>=' if minimum is not None else '>'} {low[1:]}"
    if high:
        return f"a number {'<=' if maximum is not None else '<'} {high[:-1]}"
    return "a finite number"


def number(
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a finite Python float with ``minimum <= value <= maximum`` and
    ``above < value < below`` (each None = unbounded).

    Accepts ints, floats and NumPy numbers, never ``bool``, NaN or infinity.
    """
    wording = _number_wording(minimum, maximum, above, below)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be {wording}, got {value!r}")
    value = float(value)
    if (
        not math.isfinite(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        raise ValueError(f"{name} must be {wording}, got {value!r}")
    return value


def positive_float(name: str, value: object) -> float:
    """``value`` as a finite float > 0: a learning rate, a bandwidth, a temperature."""
    return number(name, value, above=0.0)


def probability(name: str, value: object) -> float:
    """``value`` as a float in [0, 1]: a probability, a threshold on probabilities, a share."""
    return number(name, value, 0.0, 1.0)


def pair(name: str, value: int | Sequence[int], minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints as ``(h, w)``, each checked with :func:`positive_int`."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {tuple(value)!r}")
        return (
            positive_int(f"{name}[0]", value[0], minimum),
            positive_int(f"{name}[1]", value[1], minimum),
        )
    v = positive_int(name, value, minimum)
    return (v, v)


def boolean(name: str, value: object) -> bool:
    """``value`` itself when it is a ``bool``, else a TypeError naming ``name`` (1, "yes" and
    None are not switches here, although Python would count them as true or false)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def one_of(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` itself when it is one of ``choices``, else a ValueError listing them."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value looked up in a set or dict
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value
