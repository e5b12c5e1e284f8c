"""Prediction images for the loggers (segtutor/monitor/images.py)."""

from __future__ import annotations

import torch

from segtutor import viz
from segtutor.monitor import Logger, log_prediction_images, prediction_grid


class _Recorder(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_images(self, tag, images, step):
        self.calls.append(("images", tag, images, step))

    def log_pr_curve(self, tag, labels, probs, step):
        self.calls.append(("pr", tag, labels, probs, step))


def test_prediction_grid_rows_are_image_target_prediction():
    images = torch.stack([torch.full((1, 3, 4), 2.0), torch.arange(12.0).reshape(1, 3, 4)])
    target = torch.tensor([[[0, 1, 1, 0]] * 3, [[1, 1, 0, 255]] * 3])
    pred = torch.zeros(2, 3, 4, dtype=torch.long)
    grid = prediction_grid(images, target, pred, num_classes=2)
    assert grid.shape == (6, 3, 3, 4)
    # one grey channel shown as three, stretched to [0, 1] per image (a flat image stays 0)
    assert torch.equal(grid[0], torch.zeros(3, 3, 4))
    assert torch.allclose(grid[3], (torch.arange(12.0) / 11).reshape(3, 4).expand(3, 3, 4))
    want = torch.from_numpy(viz.colorize(target[1], 2)).permute(2, 0, 1).float()
    assert torch.equal(grid[4], want) and torch.equal(grid[4][:, 0, 3], torch.ones(3))  # ignore
    assert torch.equal(grid[5], torch.from_numpy(viz.colorize(pred[1], 2)).permute(2, 0, 1).float())


def test_log_prediction_images_leaves_ignored_pixels_out_of_the_pr_curve():
    rec = _Recorder()
    target = torch.tensor([[[1.0, 0.0], [255.0, 1.0]]])  # [1, 2, 2], one ignored pixel
    probs = torch.tensor([[[0.9, 0.2], [0.7, 0.6]]])
    log_prediction_images(
        rec, torch.rand(1, 1, 2, 2), target, (probs > 0.5).long(), 3, 2, probs=probs
    )
    (kind, tag, images, step), (_, pr_tag, labels, kept, pr_step) = rec.calls
    assert (kind, tag, step, images.shape) == (
        "images",
        "val/image_target_prediction",
        3,
        (3, 3, 2, 2),
    )
    assert (pr_tag, pr_step) == ("val/pr_curve", 3)
    assert labels.tolist() == [1, 0, 1] and torch.equal(kept, torch.tensor([0.9, 0.2, 0.6]))
    rec.calls.clear()
    log_prediction_images(rec, torch.rand(1, 3, 2, 2), target.long(), target.long(), 1, 3)
    assert [c[0] for c in rec.calls] == ["images"]  # no probabilities: no curve
