"""Prediction: the model outputs read at inference, the averaged probabilities."""

from __future__ import annotations

import pytest
import torch

from segtutor import tgs
from segtutor.tgs import inference


def test_model_outputs_reads_the_empty_image_head_only_where_there_is_one():
    from segtutor.models import build_model

    x = torch.randn(2, 1, 64, 64)
    with_head = build_model(
        "resunet34",
        num_classes=1,
        in_channels=1,
        classify=True,
        decoder_width=8,
        encoder_width=0.25,
    ).eval()
    # DeepLab has a segmentation head only: no empty-image logit to read
    deeplab = build_model(
        "deeplabv3",
        num_classes=1,
        in_channels=1,
        backbone="resnet18",
        encoder_width=0.25,
        head_width=16,
    ).eval()
    with torch.no_grad():
        both = inference._model_outputs(with_head, x)
        assert torch.equal(both["out"], with_head(x)) and both["cls"].shape == (2, 1)
        only = inference._model_outputs(deeplab, x)
    assert set(only) == {"out"} and torch.equal(only["out"], deeplab(x))


def test_predict_probs_rejects_a_bad_batch_size():
    model = torch.nn.Conv2d(1, 1, 1)
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            tgs.predict_probs([model], torch.zeros(2, 1, 128, 128), batch_size=bad)
