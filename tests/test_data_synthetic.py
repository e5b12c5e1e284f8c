"""Synthetic sets: the contract (shapes, dtypes, value sets), determinism and the statistics
they promise (empty share, coverage spread, depth correlation, scales, ignore pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from segtutor.data import make_shapes, make_tgs_like


@pytest.fixture(scope="module")
def tgs():
    return make_tgs_like(300, seed=3)


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(120, num_classes=5, size=64, seed=1)


def test_tgs_contract(tgs):
    assert tgs.images.shape == (300, 101, 101) and tgs.images.dtype == torch.float32
    assert tgs.masks.shape == (300, 101, 101) and tgs.masks.dtype == torch.float32
    assert tgs.depths.shape == (300,) and tgs.depths.dtype == torch.float32
    assert len(tgs.ids) == 300 and len(set(tgs.ids)) == 300
    assert all(len(i) == 10 and int(i, 16) >= 0 for i in tgs.ids)
    assert tgs.images.min() >= 0 and tgs.images.max() <= 1
    assert set(torch.unique(tgs.masks).tolist()) == {0.0, 1.0}


def test_tgs_deterministic_and_prefix_stable():
    a = make_tgs_like(6, seed=7)
    b = make_tgs_like(6, seed=7)
    c = make_tgs_like(6, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert a.ids == b.ids and torch.equal(a.depths, b.depths)
    assert not torch.equal(a.images, c.images)


def test_tgs_statistics(tgs):
    cov = tgs.coverage
    empty = (cov == 0).float().mean().item()
    assert 0.30 < empty < 0.48  # the competition: about 0.39
    salty = cov[cov > 0]
    # a spread of coverages: small, medium and (nearly) full masks all occur
    assert (salty < 0.05).any() and ((salty > 0.3) & (salty < 0.6)).any() and (salty > 0.9).any()
    # deeper sections hold salt more often
    corr = np.corrcoef(tgs.depths.numpy(), (cov > 0).numpy().astype(float))[0, 1]
    assert corr > 0.15
    # many salt bodies touch the top or bottom edge, as in the real data
    touches = ((tgs.masks[:, 0].sum(1) > 0) | (tgs.masks[:, -1].sum(1) > 0))[cov > 0]
    assert touches.float().mean() > 0.4


def test_tgs_salt_interior_differs_from_sediment(tgs):
    """Salt is rendered differently (dim/chaotic, bright rim): the image carries the label."""
    img, mask = tgs.images, tgs.masks.bool()
    # local contrast (gradient magnitude) inside salt vs outside, on images with both
    gy, gx = torch.gradient(img, dim=(1, 2))
    grad = (gy**2 + gx**2).sqrt()
    both = [i for i in range(len(img)) if 0.2 < mask[i].float().mean() < 0.8]
    assert len(both) > 10
    inside = torch.stack([grad[i][mask[i]].mean() for i in both])
    outside = torch.stack([grad[i][~mask[i]].mean() for i in both])
    assert (inside < outside).float().mean() > 0.6


def test_tgs_bad_arguments():
    with pytest.raises(ValueError, match="n must"):
        make_tgs_like(-1)
    with pytest.raises(ValueError, match="empty_fraction"):
        make_tgs_like(2, empty_fraction=1.5)
    with pytest.raises(TypeError, match="seed"):
        make_tgs_like(2, seed=1.5)


def test_shapes_contract(shapes):
    assert shapes.images.shape == (120, 3, 64, 64) and shapes.images.dtype == torch.float32
    assert shapes.masks.shape == (120, 64, 64) and shapes.masks.dtype == torch.int64
    assert shapes.class_names[0] == "background" and len(shapes.class_names) == 5
    values = set(torch.unique(shapes.masks).tolist())
    assert values <= {0, 1, 2, 3, 4, 255}
    assert {0, 1, 2, 3, 4, 255} <= values
    assert 0 <= shapes.images.min() and shapes.images.max() <= 1


def test_shapes_scales_thin_structures_and_ignore(shapes):
    masks = shapes.masks.numpy()
    ignore_share = (masks == 255).mean()
    assert 0.001 < ignore_share < 0.08
    sizes = []
    thin = 0
    for m in masks:
        for c in range(1, 5):
            lab, k = ndimage.label(m == c)
            if k:
                sizes.extend(np.bincount(lab.ravel())[1:].tolist())
        line = m == shapes.class_names.index("line")
        if line.any():
            # a thin structure disappears under a 3x3 erosion, pixels of width >= 3 survive
            eroded = ndimage.binary_erosion(line, np.ones((3, 3)))
            thin += eroded.sum() < 0.2 * line.sum()
    sizes = np.array(sizes)
    assert sizes.min() < 20 and sizes.max() > 1000  # very different scales
    assert thin > 10


def test_shapes_deterministic_and_num_classes():
    a = make_shapes(4, num_classes=12, size=32, seed=5)
    b = make_shapes(4, num_classes=12, size=32, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert len(a.class_names) == 12 and len(set(a.class_names)) == 12
    valid = a.masks[a.masks != 255]
    assert valid.max() < 12
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes(2, num_classes=1)
    with pytest.raises(ValueError, match="size"):
        make_shapes(2, size=4)
