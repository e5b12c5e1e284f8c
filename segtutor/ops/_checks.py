"""Argument checks shared by the ops modules (one place for the error messages)."""

from __future__ import annotations

from collections.abc import Sequence


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


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
