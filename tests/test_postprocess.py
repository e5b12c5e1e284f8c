"""Post-processing: small-object removal against scikit-image, watershed splitting of touching
objects, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import morphology

from segtutor.postprocess import remove_small_objects, split_instances


def discs(shape, centres_radii):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return [((yy - cy) ** 2 + (xx - cx) ** 2) < r * r for cy, cx, r in centres_radii]


def soft(mask: np.ndarray, high: float = 0.9, low: float = 0.05) -> np.ndarray:
    return np.where(mask, high, low).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# remove_small_objects


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("min_size", [0, 1, 3, 7])
def test_remove_small_objects_matches_skimage(connectivity, min_size):
    rng = np.random.default_rng(min_size + 10 * connectivity)
    mask = rng.random((40, 50)) < 0.35  # many components of many sizes
    got = remove_small_objects(mask, min_size, connectivity=connectivity)
    # skimage >= 0.26 removes objects of at most max_size pixels, i.e. fewer than max_size + 1
    expected = morphology.remove_small_objects(
        mask, max_size=max(min_size - 1, 0), connectivity=connectivity
    )
    if min_size == 0:
        expected = mask
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == bool and (got.sum() < mask.sum() or min_size <= 1)


def test_remove_small_objects_hand_example():
    mask = np.zeros((6, 8), dtype=np.float32)
    mask[0, 0] = 1  # 1 pixel
    mask[2:4, 2:4] = 1  # 4 pixels
    mask[5, 5:8] = 1  # 3 pixels
    mask[4, 4] = 1  # touches the 3-pixel bar by a corner only
    out4 = remove_small_objects(mask, 4, connectivity=1)
    expected = np.zeros_like(mask)
    expected[2:4, 2:4] = 1
    np.testing.assert_array_equal(out4, expected)
    out8 = remove_small_objects(mask, 4, connectivity=2)  # corner contact: 3 + 1 = 4 pixels, kept
    expected[5, 5:8] = 1
    expected[4, 4] = 1
    np.testing.assert_array_equal(out8, expected)
    assert out4.dtype == np.float32


def test_remove_small_objects_batch_and_tensor():
    rng = np.random.default_rng(0)
    batch = (rng.random((3, 20, 20)) < 0.3).astype(np.float32)
    out = remove_small_objects(torch.from_numpy(batch), 5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 20, 20)
    for k in range(3):  # each image on its own: equal to the single-image call
        np.testing.assert_array_equal(out[k].numpy(), remove_small_objects(batch[k], 5))


def test_remove_small_objects_errors():
    with pytest.raises(ValueError, match="binary"):
        remove_small_objects(np.full((4, 4), 0.5), 2)
    with pytest.raises(ValueError, match="min_size"):
        remove_small_objects(np.zeros((4, 4)), -1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        remove_small_objects(np.zeros(4), 1)
    with pytest.raises(ValueError, match="connectivity"):
        remove_small_objects(np.zeros((4, 4)), 1, connectivity=3)
    with pytest.raises(TypeError, match="mask"):
        remove_small_objects([[0, 1]], 1)


# ----------------------------------------------------------------------------------------------
# split_instances


def test_watershed_splits_two_touching_discs():
    a, b = discs((64, 96), [(32, 30, 15), (32, 56, 14)])  # overlapping: one connected blob
    union = a | b
    from scipy import ndimage as ndi

    assert ndi.label(union)[1] == 1  # a threshold alone sees one object
    labels = split_instances(soft(union))
    assert labels.dtype == np.int32 and labels.shape == union.shape
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(labels > 0, union)
    # each instance is one disc: match them by overlap and check IoU
    for disc in (a & ~b, b & ~a):
        k = np.bincount(labels[disc]).argmax()
        inst = labels == k
        full = a if (disc & a).any() else b
        assert (inst & full).sum() / (inst | full).sum() > 0.85


def test_single_disc_and_flat_blob_stay_one_instance():
    (disc,) = discs((48, 48), [(24, 24, 12)])
    assert split_instances(soft(disc)).max() == 1
    bar = np.zeros((20, 40), dtype=bool)
    bar[8:11, 5:35] = True  # a ridge of equal distance values: no spurious split
    assert split_instances(soft(bar)).max() == 1


def test_three_cells_and_a_speck():
    a, b, c = discs((64, 64), [(20, 20, 10), (20, 38, 10), (45, 30, 9)])
    prob = soft(a | b | c)
    prob[60, 60] = 0.95  # a one-pixel false positive
    labels = split_instances(prob, min_size=10)
    assert labels.max() == 3 and labels[60, 60] == 0
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]  # relabelled without gaps


def test_threshold_and_tensor_input():
    (disc,) = discs((32, 32), [(16, 16, 8)])
    prob = torch.from_numpy(soft(disc, high=0.6))
    assert split_instances(prob, threshold=0.7).max() == 0
    out = split_instances(prob, threshold=0.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64 and out.max() == 1


def test_split_instances_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        split_instances(np.full((8, 8), 2.0))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        split_instances(np.zeros((2, 8, 8)))
    with pytest.raises(TypeError, match="float"):
        split_instances(np.zeros((8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="threshold"):
        split_instances(np.zeros((8, 8)), threshold=1.5)
