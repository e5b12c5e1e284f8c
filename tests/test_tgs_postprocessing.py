"""Threshold search and post-processing: probabilities to the final masks."""

from __future__ import annotations

import pytest
import torch

from segtutor import tgs
from segtutor.metrics import tgs_map


def _constructed_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 20x20 images whose best threshold on the 0.30..0.70 grid is 0.55 and only 0.55.

    Salt pixels get probability 0.57, a one-pixel ring around the salt 0.52, and the two empty
    images a false-positive blob of 0.52; everything else 0.2. Then
      t <= 0.50: the ring and the blobs are predicted: IoU of the salt images drops below 0.95,
                 empty images score 0;
      t  = 0.55: exactly the salt: every image scores 1;
      t >= 0.60: nothing is predicted: the salt images score 0, the empty ones 1.
    """
    probs = torch.full((4, 20, 20), 0.2)
    masks = torch.zeros(4, 20, 20)
    for i, (r, c, s) in enumerate([(3, 3, 8), (9, 6, 6)]):
        probs[i, r - 1 : r + s + 1, c - 1 : c + s + 1] = 0.52
        probs[i, r : r + s, c : c + s] = 0.57
        masks[i, r : r + s, c : c + s] = 1
    probs[2, 5:9, 5:9] = 0.52
    probs[3, 12:15, 2:6] = 0.52
    return probs, masks


def test_threshold_search_finds_the_constructed_best():
    probs, masks = _constructed_case()
    grid = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70]
    result = tgs.search_threshold(probs, masks, grid)
    assert result.threshold == pytest.approx(0.55)
    assert result.score == pytest.approx(1.0)
    assert result.thresholds == grid
    by_t = dict(zip(result.thresholds, result.scores))
    assert by_t[0.60] == pytest.approx(0.5)  # only the two empty images right
    assert max(s for t, s in by_t.items() if t != 0.55) < 1.0
    # each score is the metric of the thresholded masks, computed independently here
    for t, s in by_t.items():
        assert s == pytest.approx(tgs_map(probs > t, masks > 0.5))


def test_threshold_search_ties_go_to_the_threshold_nearest_one_half():
    probs = torch.tensor([[[0.9, 0.1], [0.1, 0.1]]])  # any t in [0.1, 0.9) is perfect
    masks = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert tgs.search_threshold(probs, masks, [0.2, 0.45, 0.6, 0.8]).threshold == 0.45


def test_threshold_search_applies_postprocessing_before_scoring():
    probs, masks = _constructed_case()

    # a post-processing step that blanks images 2 and 3 (the empty ones) rescues t = 0.50
    def blank_empty(pred):
        pred = pred.clone()
        pred[2:] = False
        return pred

    result = tgs.search_threshold(probs, masks, [0.50, 0.60], postprocess=blank_empty)
    assert result.scores[1] == pytest.approx(0.5)
    assert result.scores[0] == pytest.approx(tgs_map(blank_empty(probs > 0.5), masks))


def test_threshold_search_rejects_bad_shapes():
    with pytest.raises(ValueError, match="probs and masks"):
        tgs.search_threshold(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="thresholds"):
        tgs.search_threshold(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), [])


def test_suppress_empty_blanks_only_images_called_empty():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    out = tgs.suppress_empty(masks, torch.tensor([0.9, 0.2, 0.5]), empty_threshold=0.5)
    assert out[0].all() and not out[1].any() and out[2].all()
    assert tgs.suppress_empty(masks, None) is masks
    with pytest.raises(ValueError, match="salt_prob"):
        tgs.suppress_empty(masks, torch.tensor([0.9]))


def test_postprocess_thresholds_removes_small_components_and_empty_images():
    probs = torch.zeros(3, 12, 12)
    probs[:, 1:6, 1:6] = 0.9  # a 25-pixel component in every image
    probs[:, 9, 9] = 0.8  # a 1-pixel speck
    probs[:, 8:11, 1:3] = 0.4  # below the threshold
    out = tgs.postprocess(
        probs,
        threshold=0.5,
        min_size=4,
        salt_prob=torch.tensor([0.9, 0.1, 0.7]),
        empty_threshold=0.5,
    )
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[1:6, 1:6] = True
    assert torch.equal(out[0], expected) and torch.equal(out[2], expected)
    assert not out[1].any()  # the classifier called image 1 empty
    # min_size 0 keeps the speck
    assert tgs.postprocess(probs, 0.5, 0)[0, 9, 9]


def test_postprocess_search_picks_min_size_that_removes_false_specks():
    probs, masks = _constructed_case()
    probs[2, 18, 18] = 0.9  # isolated false-positive pixels on the two empty images,
    probs[3, 0, 19] = 0.9  # which no threshold below 0.9 removes but min_size does
    result = tgs.search_postprocess(probs, masks, thresholds=[0.5, 0.55, 0.6], min_sizes=[0, 5])
    assert result["min_size"] == 5 and result["threshold"] == pytest.approx(0.55)
    assert result["score"] == pytest.approx(1.0)
    assert result["table"][0].score < 1.0


def test_postprocess_rejects_bad_numbers():
    probs = torch.rand(2, 8, 8)
    for bad in (float("nan"), float("inf"), -0.1, 1.5, None):
        with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\]"):
            tgs.postprocess(probs, threshold=bad)
        with pytest.raises(ValueError, match="empty_threshold must be"):
            tgs.postprocess(probs, 0.5, salt_prob=torch.rand(2), empty_threshold=bad)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="min_size must be"):
            tgs.postprocess(probs, 0.5, min_size=bad)


def test_search_turns_off_an_empty_image_head_that_would_blank_every_mask():
    # perfect probabilities, but a head that calls every image empty (it has not learned):
    # with the rule fixed at 0.5 every mask is blanked and the score is the empty share
    probs, masks = _constructed_case()
    wrong_head = torch.full((4,), 0.1)
    assert tgs_map(tgs.postprocess(probs, 0.55, 0, wrong_head, 0.5), masks) == pytest.approx(0.5)
    result = tgs.search_postprocess(
        probs, masks, wrong_head, thresholds=[0.5, 0.55, 0.6], min_sizes=[0]
    )
    assert result["empty_threshold"] == 0.0 and result["threshold"] == pytest.approx(0.55)
    assert result["score"] == pytest.approx(1.0)
    assert result["empty_scores"][0.5] == pytest.approx(0.5)
    assert result["empty_scores"][0.0] == pytest.approx(1.0)


def test_search_keeps_an_empty_image_head_that_helps():
    # the blobs on the empty images survive every threshold below 0.55; a head that knows
    # which images are empty removes them at 0.5, and then any threshold in 0.5..0.55 is perfect
    probs, masks = _constructed_case()
    probs[2:, 10:15, 10:15] = 0.9  # large false blobs: no threshold or min size helps
    head = torch.tensor([0.9, 0.8, 0.4, 0.2])
    result = tgs.search_postprocess(probs, masks, head, thresholds=[0.5, 0.55], min_sizes=[0])
    assert result["empty_threshold"] == 0.5 and result["score"] == pytest.approx(1.0)
    assert result["empty_scores"][0.0] == pytest.approx(0.5)  # the salt images only
    # each score is the metric of the whole post-processing, computed independently here
    for e, score in result["empty_scores"].items():
        best = max(tgs_map(tgs.postprocess(probs, t, 0, head, e), masks) for t in (0.5, 0.55))
        assert score == pytest.approx(best)
    # without a head there is no rule to search
    assert tgs.search_postprocess(probs, masks, thresholds=[0.5])["empty_threshold"] == 0.0
    with pytest.raises(ValueError, match="empty_threshold must be"):
        tgs.search_postprocess(probs, masks, head, empty_thresholds=[1.5])
