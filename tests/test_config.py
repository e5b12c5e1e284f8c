"""segtutor.config: device choice, quick mode, describe()."""

from __future__ import annotations

import pytest
import torch

from segtutor import config


def test_device_defaults_to_cuda_then_cpu(monkeypatch):
    monkeypatch.delenv("SEGTUTOR_DEVICE", raising=False)
    dev = config.device()
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif not config._mps_available():
        assert dev == torch.device("cpu")


def test_device_override_and_errors(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    monkeypatch.setenv("SEGTUTOR_DEVICE", "banana")
    with pytest.raises(ValueError, match="SEGTUTOR_DEVICE"):
        config.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("SEGTUTOR_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            config.device()


@pytest.mark.parametrize(
    "raw, expected", [("1", True), ("true", True), ("0", False), ("off", False)]
)
def test_quick_mode_from_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("SEGTUTOR_QUICK", raw)
    assert config.is_quick() is expected
    assert config.pick("q", "f") == ("q" if expected else "f")


def test_quick_mode_automatic_without_cuda(monkeypatch):
    monkeypatch.delenv("SEGTUTOR_QUICK", raising=False)
    assert config.is_quick() is (not torch.cuda.is_available())
    monkeypatch.setenv("SEGTUTOR_QUICK", "maybe")
    with pytest.raises(ValueError, match="SEGTUTOR_QUICK"):
        config.is_quick()


def test_describe_names_device_and_mode(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cpu")
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    line = config.describe("3 epochs on 200 images")
    assert line.startswith("device cpu (")
    assert line.endswith("quick mode: 3 epochs on 200 images")
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    assert config.describe() == f"device {config.device_name(torch.device('cpu'))}, full mode"


def test_describe_wraps_at_88_columns_with_a_hanging_indent(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cpu")
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    head = f"device {config.device_name(torch.device('cpu'))}, quick mode:"
    words = [f"w{i:02d}" for i in range(60)]  # 60 words of 3 letters: 239 characters
    text = config.describe(" ".join(words))
    lines = text.split("\n")
    assert len(lines) >= 3
    assert all(len(line) <= 88 for line in lines), [len(line) for line in lines]
    assert lines[0].startswith(head)
    assert all(line.startswith("  w") for line in lines[1:])
    # greedy filling: the next word would not have fitted on the line before
    for before, after in zip(lines, lines[1:]):
        assert len(before) + 1 + len(after.split()[0]) > 88
    # nothing lost or reordered: the same words, in order, as the unwrapped line
    assert text.split() == (head + " " + " ".join(words)).split()
    assert config.describe("3 epochs", width=88) == f"{head} 3 epochs"  # short: one line


def test_describe_keeps_newlines_and_indentation(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cpu")
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    long_tail = "trained 5 epochs each on 64 scenes of 64x64, " * 3
    lines = config.describe(f"two models\n    {long_tail.strip()}", width=60).split("\n")
    assert lines[0].endswith("full mode: two models")
    # the explicit continuation keeps its 4 spaces, and so do the lines it wraps into
    assert len(lines) >= 3
    assert all(line.startswith("    ") and not line.startswith("     ") for line in lines[1:])
    assert all(len(line) <= 60 for line in lines)
    assert " ".join(" ".join(lines[1:]).split()) == long_tail.strip()
    # words are never split, not even at a hyphen
    one = config.describe("x" * 100 + " width-0.25-model", width=40).split("\n")
    assert one[1] == "  " + "x" * 100 and one[2] == "  width-0.25-model"


def test_describe_rejects_bad_input():
    with pytest.raises(TypeError, match="work"):
        config.describe(3)
    with pytest.raises(ValueError, match="width"):
        config.describe("x", width=5)


def test_seed_everything_is_reproducible():
    g1 = config.seed_everything(123)
    a = torch.rand(3), torch.rand(2, generator=g1)
    g2 = config.seed_everything(123)
    b = torch.rand(3), torch.rand(2, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(TypeError, match="seed"):
        config.seed_everything(1.5)


def test_version_is_exposed():
    import segtutor

    assert isinstance(segtutor.__version__, str) and segtutor.__version__.count(".") >= 1


def test_seed_offset_shifts_every_seed(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_SEED_OFFSET", "2")
    a = torch.rand(3, generator=config.seed_everything(1))
    monkeypatch.delenv("SEGTUTOR_SEED_OFFSET")
    assert torch.equal(a, torch.rand(3, generator=config.seed_everything(3)))
    assert not torch.equal(a, torch.rand(3, generator=config.seed_everything(1)))
    monkeypatch.setenv("SEGTUTOR_SEED_OFFSET", "x")
    with pytest.raises(ValueError, match="SEGTUTOR_SEED_OFFSET"):
        config.seed_everything(0)
