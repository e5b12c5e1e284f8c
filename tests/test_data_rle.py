"""Kaggle TGS run-length encoding: known vectors, round trips, malformed input, and the two
widely copied bugs (decode returning ``img.mean()``; row-major order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segtutor.data import rle_decode, rle_encode


def test_known_vectors_3x3():
    col = np.zeros((3, 3), dtype=np.uint8)
    col[:, 0] = 1
    row = np.zeros((3, 3), dtype=np.uint8)
    row[0, :] = 1
    assert rle_encode(col) == "1 3"
    assert rle_encode(row) == "1 1 4 1 7 1"
    assert np.array_equal(rle_decode("1 3", (3, 3)), col)
    assert np.array_equal(rle_decode("1 1 4 1 7 1", (3, 3)), row)


def test_known_vectors_by_hand():
    # column-major numbering of a 2x4 mask: [[1, 3, 5, 7], [2, 4, 6, 8]]
    m = np.array([[0, 1, 1, 0], [1, 1, 0, 1]])
    # pixels 2, 3, 4, 5 form one run across a column boundary, then pixel 8
    assert rle_encode(m) == "2 4 8 1"
    assert np.array_equal(rle_decode("2 4 8 1", (2, 4)), m)
    full = np.ones((101, 101), dtype=bool)
    assert rle_encode(full) == "1 10201"
    assert rle_encode(np.zeros((101, 101))) == ""
    assert rle_encode(torch.ones(2, 2)) == "1 4"


def _reference_encode(mask: np.ndarray) -> str:
    """A plain loop over pixels in column-major order, written from the definition."""
    out, run_start, run_len = [], None, 0
    h, w = mask.shape
    number = 0
    for x in range(w):
        for y in range(h):
            number += 1
            if mask[y, x]:
                if run_start is None:
                    run_start, run_len = number, 0
                run_len += 1
            elif run_start is not None:
                out += [run_start, run_len]
                run_start = None
    if run_start is not None:
        out += [run_start, run_len]
    return " ".join(map(str, out))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (101, 101), (16, 3)])
def test_round_trip_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.1, 0.5, 0.9, 1.0):
        m = (rng.random(shape) < density).astype(np.uint8)
        code = rle_encode(m)
        assert code == _reference_encode(m)
        back = rle_decode(code, shape)
        assert back.dtype == np.uint8 and back.shape == shape
        assert np.array_equal(back, m)


def test_empty_inputs_decode_to_zeros():
    for empty in ("", "   ", None, float("nan")):
        out = rle_decode(empty, (4, 5))
        assert out.shape == (4, 5) and out.sum() == 0


def test_touching_and_unsorted_runs_decode():
    # not canonical (the encoder would merge them) but well formed
    assert rle_decode("1 2 3 1", (3, 1)).ravel().tolist() == [1, 1, 1]
    assert rle_decode("7 1 1 1", (3, 3)).tolist() == rle_decode("1 1 7 1", (3, 3)).tolist()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("1 3 5", "odd number"),
        ("1 a", "integers"),
        ("1.5 2", "integers"),
        ("1 -2", "integers"),
        ("0 2", "1-based"),
        ("1 0", "positive"),
        ("8 3", "past the last pixel"),
        ("1 4 3 2", "overlap"),
        ("5 1 1 6", "overlap"),
    ],
)
def test_malformed_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(bad, (3, 3))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("１ ２", "ASCII digits"),  # full-width digits: \d, str.isdigit and int() all take them
        ("١ ٢", "ASCII digits"),  # Arabic-Indic one and two
        ("1 ٣", "ASCII digits"),
        ("+1 2", "ASCII digits"),
        ("1 1_0", "ASCII digits"),
    ],
)
def test_only_ascii_digits_are_numbers(bad, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(bad, (3, 3))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("99999999999999999999999 1", "starts at pixel 99999999999999999999"),  # int64 overflow
        ("9223372036854775807 9223372036854775807", "starts at pixel 9223372036854775807, past"),
        ("1 9223372036854775807", "length 9223372036854775807, longer than the 9 pixels"),
        ("1 99999999999999999999999", "longer than the 9 pixels of a 3x3 mask"),
        ("10 1", "starts at pixel 10, past the last pixel 9 of a 3x3 mask"),
        ("1 10", "length 10, longer than"),
        ("2 9", "ends at pixel 10, past the last pixel 9"),
        ("1 1 5 " + "9" * 5000, r"run 2 has length 9{20}\.\.\. \(5000 characters\)"),
        ("1 0", "positive"),
        ("0 0", "1-based"),
    ],
)
def test_huge_numbers_are_bounded_by_the_mask_size(bad, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(bad, (3, 3))


def test_leading_zeros_are_plain_ascii_numbers():
    # "0001" is the number 1; a long run of zeros in front of a valid number is still valid
    assert rle_decode("0001 02", (3, 1)).ravel().tolist() == [1, 1, 0]
    assert rle_decode("0" * 50 + "3 " + "0" * 50 + "1", (3, 1)).ravel().tolist() == [0, 0, 1]
    # the largest valid run on a 101 x 101 mask, and one past it
    assert rle_decode("1 10201").all()
    with pytest.raises(ValueError, match="past the last pixel 10201"):
        rle_decode("10201 2")


def test_bad_mask_and_shape():
    with pytest.raises(ValueError, match="only 0 and 1"):
        rle_encode(np.array([[0, 255]]))
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        rle_decode("1 1", (3,))
    with pytest.raises(ValueError, match="shape"):
        rle_decode("1 1", (0, 3))
    with pytest.raises(TypeError, match="rle must be a string"):
        rle_decode(5, (3, 3))


# ------------------------------------------------------------------------------ errata


def buggy_rle_decode(rle: str, shape=(101, 101)):
    """The widely copied snippet: row-major, and it returns the *mean* of the mask."""
    s = rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    img = img.reshape(shape)  # row-major: Kaggle's numbering runs down the columns
    return img.mean()  # a scalar instead of the mask


def buggy_rle_encode(img):
    """Row-major encoder from the same family of snippets."""
    pixels = np.concatenate([[0], img.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def test_erratum_buggy_decode_returns_a_number_and_wrong_orientation():
    m = np.zeros((101, 101), dtype=np.uint8)
    m[:, :30] = 1  # salt on the left third: column runs
    code = rle_encode(m)
    assert code == "1 3030"
    wrong = buggy_rle_decode(code)
    assert np.ndim(wrong) == 0  # a float, not a mask
    # fixing only the return value still gives the transposed picture
    s = code.split()
    rowmajor = np.zeros(101 * 101, dtype=np.uint8)
    rowmajor[int(s[0]) - 1 : int(s[0]) - 1 + int(s[1])] = 1
    rowmajor = rowmajor.reshape(101, 101)
    assert rowmajor[:30].sum() == 3030 and rowmajor[:, 30:].sum() > 0  # top rows, not left cols
    assert not np.array_equal(rowmajor, m)
    assert np.array_equal(rowmajor, m.T)
    assert np.array_equal(rle_decode(code), m)


def test_erratum_row_major_encoder_disagrees_with_kaggle():
    row = np.zeros((3, 3), dtype=np.uint8)
    row[0, :] = 1
    assert buggy_rle_encode(row) == "1 3"  # that is Kaggle's code for the first *column*
    assert rle_encode(row) == "1 1 4 1 7 1"
    # the buggy pair is self-consistent, which is why the error goes unnoticed in round trips:
    # it only shows against Kaggle's train.csv (see test_data_tgs) or a hand-worked vector
    rng = np.random.default_rng(0)
    m = (rng.random((101, 101)) < 0.3).astype(np.uint8)
    assert buggy_rle_encode(m) == rle_encode(m.T)
    assert buggy_rle_encode(m) != rle_encode(m)
