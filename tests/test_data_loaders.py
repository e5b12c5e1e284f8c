"""DeviceLoader: batches sliced from tensors on the device (segtutor/data/loaders.py)."""

from __future__ import annotations

import pytest
import torch

from segtutor.data.loaders import DeviceLoader


def _task(n: int = 10):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return x, (x[:, 0] > 0.5).float()


def test_device_loader_batches_and_resumes_order():
    x, y = _task(10)
    dl = DeviceLoader(x, y, batch_size=4, shuffle=True, seed=5, device="cpu")
    assert len(dl) == 3
    seen = torch.cat([b[0] for b in dl])
    assert torch.equal(seen.sort(0).values, x.sort(0).values)  # every image once
    state = dl.generator.get_state()
    first = [b[1] for b in dl]
    dl.generator.set_state(state)
    assert all(torch.equal(a, b[1]) for a, b in zip(first, dl))
    with pytest.raises(ValueError, match="same N"):
        DeviceLoader(x, y[:3], batch_size=2, device="cpu")


def test_device_loader_is_still_importable_from_its_former_home():
    import segtutor.data
    import segtutor.train
    import segtutor.train.trainer

    assert segtutor.train.DeviceLoader is DeviceLoader
    assert segtutor.train.trainer.DeviceLoader is DeviceLoader
    assert segtutor.data.DeviceLoader is DeviceLoader


def test_device_loader_drop_last_augment_and_bad_batch_size():
    x, y = _task(10)
    flipped = DeviceLoader(
        x,
        y,
        batch_size=4,
        drop_last=True,
        device="cpu",
        augment=lambda a, b: (a.flip(-1), b.flip(-1)),
    )
    batches = list(flipped)
    assert len(flipped) == len(batches) == 2
    assert torch.equal(batches[1][0], x[4:8].flip(-1))
    assert torch.equal(batches[1][1], y[4:8].flip(-1))
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            DeviceLoader(x, y, batch_size=bad, device="cpu")
