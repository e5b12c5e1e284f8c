"""Encoder options for small inputs and loading backbone weights the project trained itself."""

from __future__ import annotations

import pytest
import torch
import torchvision

from segtutor.models.encoders import Encoder, load_encoder_weights


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    # the output-size formula of the PyTorch Conv2d/MaxPool2d docs
    return (size + 2 * padding - kernel) // stride + 1


def test_stem_pool_sizes_on_a_101_px_tile():
    stem = _conv_out(101, 7, 2, 3)  # 51
    pooled = _conv_out(stem, 3, 2, 1)  # 26
    assert (stem, pooled) == (51, 26)
    x = torch.randn(1, 1, 101, 101)
    with_pool = Encoder("resnet18", in_channels=1, width=0.25).eval()
    without = Encoder("resnet18", in_channels=1, width=0.25, stem_pool=False).eval()
    sizes = [f.shape[-1] for f in with_pool(x)]
    sizes_np = [f.shape[-1] for f in without(x)]
    expect = [stem, pooled]
    for _ in range(3):
        expect.append(_conv_out(expect[-1], 3, 2, 1))
    assert sizes == expect == [51, 26, 13, 7, 4]
    assert sizes_np == [51, 51, 26, 13, 7]
    assert with_pool.reductions == [2, 4, 8, 16, 32]
    assert without.reductions == [2, 2, 4, 8, 16]


def test_stem_pool_false_only_skips_the_pool():
    torch.manual_seed(0)
    pooled = Encoder("resnet18", width=0.25).eval()
    plain = Encoder("resnet18", width=0.25, stem_pool=False).eval()
    # same parameters and keys: the pool has none
    plain.load_state_dict(pooled.state_dict(), strict=True)
    x = torch.randn(2, 3, 40, 40)
    f_pooled, f_plain = pooled(x), plain(x)
    torch.testing.assert_close(f_plain[0], f_pooled[0])
    torch.testing.assert_close(f_plain[1], pooled.layer1(f_pooled[0]))


def test_stem_pool_rejects_bad_values():
    with pytest.raises(ValueError, match="ResNets only"):
        Encoder("vgg16", width=0.125, stem_pool=False)
    with pytest.raises(TypeError, match="stem_pool"):
        Encoder("resnet18", width=0.25, stem_pool=0)


def test_load_encoder_weights_matches_torchvision_resnet(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=4).eval()
    path = tmp_path / "backbone.pt"
    torch.save(reference.state_dict(), path)
    enc = Encoder("resnet18").eval()
    state = load_encoder_weights(enc, path)
    assert "fc.weight" in state  # the classifier is in the file, and skipped
    x = torch.randn(1, 3, 64, 64)
    r = reference
    with torch.no_grad():
        y = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        expected = r.layer4(r.layer3(r.layer2(r.layer1(y))))
        torch.testing.assert_close(enc(x)[-1], expected)


def test_load_encoder_weights_errors(tmp_path):
    enc = Encoder("resnet18", in_channels=1, width=0.25)
    missing = tmp_path / "nothing_here.pt"
    with pytest.raises(FileNotFoundError, match="nothing_here.pt"):
        load_encoder_weights(enc, missing)
    other = tmp_path / "wider.pt"
    torch.save(Encoder("resnet18", in_channels=1, width=0.5).state_dict(), other)
    with pytest.raises(ValueError, match="width 0.25"):
        load_encoder_weights(enc, other)
    with pytest.raises(TypeError, match="Encoder"):
        load_encoder_weights(torch.nn.Linear(2, 2), other)
    # the project's own weights round-trip, with a classifier under fc.
    mine = Encoder("resnet18", in_channels=1, width=0.25)
    path = tmp_path / "mine.pt"
    torch.save({**mine.state_dict(), "fc.weight": torch.zeros(3, 128)}, path)
    load_encoder_weights(enc, path)
    for key, value in mine.state_dict().items():
        torch.testing.assert_close(enc.state_dict()[key], value)
