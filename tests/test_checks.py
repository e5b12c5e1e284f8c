"""The package-wide argument checks: bool refused, NumPy numbers accepted, messages name the
argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segtutor import checks


@pytest.mark.parametrize(
    "check", [checks.positive_int, checks.non_negative_int, checks.integer, checks.pair]
)
@pytest.mark.parametrize("flag", [True, False, np.bool_(True)])
def test_bool_is_not_an_int(check, flag):
    with pytest.raises(TypeError, match="^size must be") as err:
        check("size", flag)
    assert isinstance(err.value, ValueError)  # caught by `except ValueError` callers too


@pytest.mark.parametrize("check", [checks.number, checks.positive_float, checks.probability])
def test_bool_is_not_a_float(check):
    with pytest.raises(checks.ArgumentTypeError, match="^rate must be a (finite )?number"):
        check("rate", True)


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), np.uint8(3), 3])
def test_numpy_ints_are_ints(value):
    out = checks.positive_int("n", value)
    assert out == 3 and type(out) is int
    assert checks.pair("size", value) == (3, 3)


def test_floats_and_strings_are_not_ints():
    for bad in (3.0, "3", None, np.float64(3)):
        with pytest.raises(TypeError, match=r"^n must be a positive int, got"):
            checks.positive_int("n", bad)


def test_integer_bounds_and_wording():
    assert checks.positive_int("n", 1) == 1
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        checks.positive_int("n", 0)
    with pytest.raises(ValueError, match=r"^k must be an int >= 2, got 1$"):
        checks.positive_int("k", 1, minimum=2)
    assert checks.non_negative_int("seed", 0) == 0
    with pytest.raises(ValueError, match=r"^seed must be a non-negative int, got -1$"):
        checks.non_negative_int("seed", -1)
    with pytest.raises(ValueError, match=r"^b must be an int in \[0, 255\], got 256$"):
        checks.integer("b", 256, 0, 255)
    assert checks.integer("any", -7) == -7


def test_numbers():
    assert checks.number("x", np.float32(0.5)) == 0.5
    assert type(checks.number("x", 2)) is float
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="^x must be a finite number, got"):
            checks.number("x", bad)
        with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got"):
            checks.probability("p", bad)
    assert checks.positive_float("lr", 1e-3) == 1e-3
    with pytest.raises(ValueError, match=r"^lr must be a number > 0, got 0.0$"):
        checks.positive_float("lr", 0)
    assert checks.probability("p", 0) == 0.0 and checks.probability("p", 1) == 1.0
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got 1.01$"):
        checks.probability("p", 1.01)
    with pytest.raises(ValueError, match=r"^dropout must be a number in \[0, 1\), got 1.0$"):
        checks.number("dropout", 1.0, 0.0, below=1.0)
    assert checks.number("dropout", 0.0, 0.0, below=1.0) == 0.0


def test_pair():
    assert checks.pair("size", (2, 3)) == (2, 3)
    assert checks.pair("size", [0, 4], minimum=0) == (0, 4)
    with pytest.raises(ValueError, match=r"^size must be an int or a pair \(h, w\)"):
        checks.pair("size", (1, 2, 3))
    with pytest.raises(ValueError, match=r"^size\[1\] must be a positive int, got 0"):
        checks.pair("size", (2, 0))
    with pytest.raises(TypeError, match=r"^size\[0\] must be"):
        checks.pair("size", (True, 2))


def test_one_of():
    assert checks.one_of("mode", "max", ("min", "max")) == "max"
    with pytest.raises(ValueError, match=r"^mode must be one of 'min', 'max'; got 'mean'$"):
        checks.one_of("mode", "mean", ("min", "max"))
    with pytest.raises(ValueError, match="^mode must be one of"):
        checks.one_of("mode", ["max"], {"min", "max"})  # unhashable: refused, not a crash


def test_boolean_takes_only_a_bool():
    assert checks.boolean("flag", True) is True and checks.boolean("flag", False) is False
    for bad in (1, 0, "yes", None, 1.0):
        with pytest.raises(TypeError, match="flag must be a bool"):
            checks.boolean("flag", bad)
