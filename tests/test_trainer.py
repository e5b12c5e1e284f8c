"""The Trainer, checkpoints, schedules, snapshots and DDP, on tiny CPU problems."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segtutor.train import NonFiniteLossError, Trainer, checkpoint, schedules

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: on a shared 2-core machine a second intra-op thread only adds contention
    # (measured: a 1x1 conv on [8, 1, 8, 8] took 0.06 ms on 1 thread, 5.7 ms on 2 under load)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- tiny problems
def threshold_task(n: int = 32, size: int = 8, seed: int = 0, classes: int = 1):
    """Images [n, 1, size, size] uniform in [0, 1]; the label of a pixel depends on its value only
    (binary: value > 0.5; k classes: floor(value * k)). A 1x1 conv can learn it exactly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    if classes == 1:
        y = (x[:, 0] > 0.5).float()
    else:
        y = (x[:, 0] * classes).long().clamp_max(classes - 1)
    return x, y


def loader(x, y, batch_size=8, shuffle=False, seed=0):
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def tiny_net(out_channels: int = 1, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out_channels, 1))


def make_trainer(model, train, val=None, num_classes=1, lr=0.05, **kw):
    crit = nn.BCEWithLogitsLoss() if num_classes == 1 else nn.CrossEntropyLoss(ignore_index=255)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    kw.setdefault("progress", False)
    kw.setdefault("verbose", False)
    return Trainer(model, crit, opt, train, val, num_classes=num_classes, device="cpu", **kw)


# ---------------------------------------------------------------------------- learning
def test_binary_model_learns_threshold_task():
    x, y = threshold_task(64)
    tr = make_trainer(tiny_net(1), loader(x, y, shuffle=True), loader(x, y))
    first = tr.evaluate()["loss"]
    hist = tr.fit(15)
    # a stated factor: the validation loss falls at least 5x, and the task is solved
    assert hist[-1]["val_loss"] < first / 5
    assert hist[-1]["val_mean_iou"] > 0.9
    assert hist[-1]["val_tgs_map"] > 0.5
    assert {"epoch", "train_loss", "val_loss", "val_mean_iou", "lr", "val_tgs_map"} <= set(hist[-1])
    assert [r["epoch"] for r in hist] == list(range(1, 16))


def test_multiclass_model_learns_and_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix as sk_cm

    x, y = threshold_task(64, classes=3)
    y[:4, :2, :2] = 255  # some ignored pixels
    tr = make_trainer(tiny_net(3, 16), loader(x, y, shuffle=True), loader(x, y), num_classes=3)
    first = tr.evaluate()["loss"]
    hist = tr.fit(20)
    assert hist[-1]["val_loss"] < first / 3
    assert hist[-1]["val_mean_iou"] > 0.8
    # the trainer's mean IoU equals one computed independently from the predictions
    pred = tr.predict(loader(x, y)).argmax(1)
    keep = y != 255
    cm = sk_cm(y[keep].numpy(), pred[keep].numpy(), labels=[0, 1, 2])
    iou = cm.diagonal() / (cm.sum(0) + cm.sum(1) - cm.diagonal())
    assert tr.evaluate()["mean_iou"] == pytest.approx(iou.mean(), abs=1e-9)


def test_with_segtutor_data_and_unet():
    from segtutor.data import InMemoryDataset, make_loader, make_shapes
    from segtutor.models import build_model

    shapes = make_shapes(8, num_classes=3, size=32, seed=0)
    ds = InMemoryDataset(shapes.images, shapes.masks)
    model = build_model("unet", num_classes=3, in_channels=3, base_width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tr = Trainer(
        model,
        nn.CrossEntropyLoss(ignore_index=255),
        opt,
        make_loader(ds, 4, shuffle=True),
        make_loader(ds, 4),
        num_classes=3,
        device="cpu",
        progress=False,
        verbose=False,
    )
    hist = tr.fit(2)
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    assert tr.predict(make_loader(ds, 4)).shape == (8, 3, 32, 32)


def test_aux_outputs_in_train_mode_add_weighted_loss():
    class AuxNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.main, self.aux = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)

        def forward(self, x):
            out = self.main(x)
            return {"out": out, "aux": self.aux(x)} if self.training else out

    x, y = threshold_task(8)
    model = AuxNet()
    tr = make_trainer(model, loader(x, y), aux_weight=0.25)
    model.train()
    out = model(x)
    loss, logits = tr.compute_loss(out, y)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(out["out"][:, 0], y) + 0.25 * bce(out["aux"][:, 0], y)
    assert torch.allclose(loss, expected)
    assert logits is out["out"]
    tr.fit(2)  # train mode gives a dict, eval mode a tensor: both paths run
    assert model.aux.weight.grad is not None


# ---------------------------------------------------------------------------- the loop as functions
def test_train_one_epoch_and_evaluate_are_the_trainers_epoch():
    from segtutor.losses import WithAuxiliary
    from segtutor.train import evaluate, train_one_epoch

    x, y = threshold_task(32)
    torch.manual_seed(0)
    ours, theirs = tiny_net(1), tiny_net(1)
    theirs.load_state_dict(ours.state_dict())
    tr = Trainer(
        ours,
        nn.BCEWithLogitsLoss(),
        torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9),
        loader(x, y, shuffle=True, seed=4),
        loader(x, y),
        num_classes=1,
        device="cpu",
        grad_clip=0.5,
        progress=False,
        verbose=False,
    )
    hist = tr.fit(2)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    criterion = WithAuxiliary(nn.BCEWithLogitsLoss())
    train, val = loader(x, y, shuffle=True, seed=4), loader(x, y)
    for epoch, row in enumerate(hist, start=1):
        mean = train_one_epoch(theirs, criterion, opt, train, "cpu", epoch=epoch, grad_clip=0.5)
        scores = evaluate(theirs, val, criterion, 1, "cpu")
        assert mean == row["train_loss"]
        assert scores == {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_evaluate_metrics_by_hand():
    from segtutor.train import evaluate

    class Fixed(nn.Module):  # predicts "salt" left of column 3: logits +1 / -1
        def forward(self, x):
            logits = -torch.ones_like(x)
            logits[..., :3] = 1.0
            return logits

    y = torch.zeros(2, 4, 4)
    y[0, :, :2] = 1  # image 0: salt in columns 0-1; image 1: empty
    x = torch.zeros(2, 1, 4, 4)
    got = evaluate(Fixed(), [(x, y)], None, 1, "cpu")
    assert "loss" not in got  # no criterion, no loss
    pred = torch.zeros(2, 4, 4)
    pred[..., :3] = 1
    tp, fp = float((pred * y).sum()), float((pred * (1 - y)).sum())
    fn, tn = float(((1 - pred) * y).sum()), float(((1 - pred) * (1 - y)).sum())
    assert got["pixel_accuracy"] == pytest.approx((tp + tn) / 32)
    iou_fg, iou_bg = tp / (tp + fp + fn), tn / (tn + fp + fn)
    assert got["mean_iou"] == pytest.approx((iou_fg + iou_bg) / 2)
    # TGS: image 0 IoU 8/12 clears thresholds 0.50..0.65 (4 of 10); image 1 predicts salt on an
    # empty mask: 0
    assert got["tgs_map"] == pytest.approx((4 / 10 + 0) / 2)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(Fixed(), [], None, 1, "cpu")


# ---------------------------------------------------------------------------- errors
def test_nan_loss_stops_with_the_step_named():
    x, y = threshold_task(32)
    x[20] = float("nan")  # batch 2 (0-based) of size 8 contains the NaN image
    tr = make_trainer(tiny_net(1), loader(x, y))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2\b"):
        tr.fit(1)


# ---------------------------------------------------------------------------- the step itself
class _GradsAtForward(nn.Module):
    """tiny_net that records, at each training forward, whether any gradient is still held."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net(1)
        self.held: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.held.append(any(p.grad is not None for p in self.parameters()))
        return self.net(x)


def test_last_steps_gradients_are_freed_before_the_forward_pass():
    # as in a hand-written loop: zero_grad(set_to_none=True) comes first, so the activations of
    # a step never share memory with the gradients of the step before (a higher peak, more
    # fresh pages from the OS: the Trainer measured 12 % slower than the loop on a 16-core CPU)
    x, y = threshold_task(32)
    model = _GradsAtForward()
    make_trainer(model, loader(x, y)).fit(2)
    assert model.held == [False] * 8


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_step_gives_the_weights_of_a_hand_written_loop_exactly(grad_clip):
    x, y = threshold_task(32)
    torch.manual_seed(0)
    ours, theirs = tiny_net(1), tiny_net(1)
    theirs.load_state_dict(ours.state_dict())
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    crit = nn.BCEWithLogitsLoss()
    tr = Trainer(
        ours,
        crit,
        torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9),
        loader(x, y),
        num_classes=1,
        device="cpu",
        grad_clip=grad_clip,
        progress=False,
        verbose=False,
    )
    hist = tr.fit(2)
    losses = []
    for _ in range(2):
        for xb, yb in loader(x, y):
            opt.zero_grad(set_to_none=True)
            loss = crit(theirs(xb)[:, 0], yb)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(theirs.parameters(), grad_clip)
            opt.step()
            losses.append(loss.item())
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in hist] == pytest.approx(
        [sum(losses[:4]) / 4, sum(losses[4:]) / 4], abs=1e-12
    )


def test_shape_mismatch_is_reported_before_the_first_backward():
    x, y = threshold_task(8)
    model = tiny_net(3)  # 3 channels for a binary task
    tr = make_trainer(model, loader(x, y))
    with pytest.raises(ValueError, match=r"does not match target"):
        tr.fit(1)
    assert all(p.grad is None for p in model.parameters())  # no backward happened
    x2, y2 = threshold_task(8, classes=3)
    tr2 = make_trainer(tiny_net(2), loader(x2, y2), num_classes=3)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tr2.fit(1)


class _WithHead(nn.Module):
    """A net with an extra image-level output in training mode, like the TGS empty-image head."""

    def __init__(self) -> None:
        super().__init__()
        self.seg = tiny_net(1)
        self.cls = nn.Linear(1, 1)

    def forward(self, x):
        out = self.seg(x)
        if not self.training:
            return out
        return {"out": out, "cls": self.cls(x.mean((1, 2, 3))[:, None])[:, 0]}


def test_outputs_no_loss_reads_are_reported_once():
    import warnings

    from segtutor.losses import WithAuxiliary
    from segtutor.tgs import WithEmptyImageHead

    x, y = threshold_task(16)
    with pytest.warns(UserWarning, match=r"no loss for the model's output\(s\) \['cls'\]"):
        make_trainer(_WithHead(), loader(x, y)).fit(1)
    net = _WithHead()
    criterion = WithEmptyImageHead(WithAuxiliary(nn.BCEWithLogitsLoss()), cls_weight=0.05)
    tgs_trainer = Trainer(
        net,
        criterion,
        torch.optim.SGD(net.parameters(), lr=0.1),
        loader(x, y),
        num_classes=1,
        device="cpu",
        progress=False,
        verbose=False,
    )
    assert tgs_trainer.handled_outputs == ("out", "aux", "cls")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the criterion trains the head: nothing to report
        tgs_trainer.fit(1)
    assert net.cls.weight.grad is not None


def test_empty_image_loss_gives_the_value_of_the_former_trainer_subclass():
    # the TGS empty-image term was a Trainer subclass (TGSTrainer.compute_loss); as a criterion
    # it gives the same number: 1.115730881690979 on these tensors, recorded from the subclass
    from segtutor.losses import WithAuxiliary
    from segtutor.tgs import WithEmptyImageHead, has_salt

    g = torch.Generator().manual_seed(7)
    out = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    aux = [torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    cls = torch.randn(4, generator=g, dtype=torch.float64)
    y = (torch.rand(4, 6, 6, generator=g) > 0.7).double()
    y[1] = 0  # an empty mask: its image-level target is 0
    net = nn.Conv2d(1, 1, 1)
    tr = Trainer(
        net,
        WithEmptyImageHead(WithAuxiliary(nn.BCEWithLogitsLoss(), 0.2), 0.05),
        torch.optim.SGD(net.parameters(), lr=0.1),
        None,
        num_classes=1,
        device="cpu",
        progress=False,
        verbose=False,
    )
    loss, logits = tr.compute_loss({"out": out, "aux": aux, "cls": cls}, y)
    assert float(loss) == 1.115730881690979 and logits is out
    bce = nn.functional.binary_cross_entropy_with_logits
    assert has_salt(y).tolist() == [1.0, 0.0, 1.0, 1.0]
    t = y.float()  # the Trainer hands binary masks to the criterion as float32
    by_hand = (
        bce(out[:, 0], t)
        + 0.2 * bce(aux[0][:, 0], t)
        + 0.2 * bce(aux[1][:, 0], t)
        + 0.05 * bce(cls.float(), has_salt(t))
    )
    assert torch.equal(loss, by_hand)
    # eval mode: logits alone, the segmentation loss alone
    assert torch.equal(tr.compute_loss(out, y)[0], bce(out[:, 0], t))


def test_assigning_a_plain_loss_wraps_it_like_the_constructor():
    # the Losses chapter switches the loss between stages with `trainer.criterion = loss`
    from segtutor.losses import DeepSupervisionLoss, WithAuxiliary

    x, y = threshold_task(8)
    net = nn.Conv2d(1, 1, 1)
    tr = make_trainer(net, loader(x, y), aux_weight=0.25)
    tr.criterion = nn.BCEWithLogitsLoss()  # torch's: wants [B, H, W] logits for [B, H, W] masks
    assert isinstance(tr.criterion, WithAuxiliary) and tr.criterion.aux_weight == 0.25
    out = {"out": net(x), "aux": [2 * net(x)]}
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(out["out"][:, 0], y) + 0.25 * bce(out["aux"][0][:, 0], y)
    assert torch.equal(tr.compute_loss(out, y)[0], expected)
    with pytest.raises(ValueError, match="give it its own weights"):
        tr.criterion = DeepSupervisionLoss(nn.BCEWithLogitsLoss())
    plain = make_trainer(nn.Conv2d(1, 1, 1), loader(x, y))
    deep = DeepSupervisionLoss(nn.BCEWithLogitsLoss())
    plain.criterion = deep
    assert plain.criterion is deep


def test_a_criterion_that_reads_the_output_keeps_its_own_weights():
    from segtutor.losses import DeepSupervisionLoss, WithAuxiliary

    x, y = threshold_task(8)
    net = tiny_net(1)
    with pytest.raises(ValueError, match=r"aux_weight and aux_criterion wrap a plain loss"):
        Trainer(
            net,
            WithAuxiliary(nn.BCEWithLogitsLoss()),
            torch.optim.SGD(net.parameters(), lr=0.1),
            None,
            num_classes=1,
            device="cpu",
            aux_weight=0.3,
        )
    # a plain loss is wrapped: the default auxiliary weight is 0.4, as before
    tr = make_trainer(tiny_net(1), loader(x, y))
    assert isinstance(tr.criterion, WithAuxiliary) and tr.criterion.aux_weight == 0.4
    deep = DeepSupervisionLoss(nn.BCEWithLogitsLoss(), weights=[1.0, 0.5])
    tr = Trainer(
        tiny_net(1),
        deep,
        torch.optim.SGD(tiny_net(1).parameters(), lr=0.1),
        None,
        num_classes=1,
        device="cpu",
    )
    assert tr.criterion is deep and tr.handled_outputs == ("out", "aux")


def test_bad_arguments():
    x, y = threshold_task(8)
    with pytest.raises(ValueError, match="num_classes"):
        make_trainer(tiny_net(1), loader(x, y), num_classes=0)
    with pytest.raises(ValueError, match="amp"):
        make_trainer(tiny_net(1), loader(x, y), amp="fp8")
    with pytest.raises(ValueError, match="epochs"):
        make_trainer(tiny_net(1), loader(x, y)).fit(0)


# ---------------------------------------------------------------------------- checkpoints
def test_exact_resume_matches_uninterrupted_run(tmp_path):
    def run(epochs, resume=None, ckdir=None):
        torch.manual_seed(0)
        x, y = threshold_task(48)
        model = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(8, 1, 1)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        tr = Trainer(
            model,
            nn.BCEWithLogitsLoss(),
            opt,
            loader(x, y, shuffle=True, seed=3),
            loader(x, y),
            num_classes=1,
            scheduler=sched,
            device="cpu",
            checkpoint_dir=ckdir,
            progress=False,
            verbose=False,
        )
        if resume is not None:
            torch.manual_seed(123)  # a resumed process starts from a different RNG state
        tr.fit(epochs, resume=resume)
        return tr

    full = run(4)
    part = run(2, ckdir=tmp_path)
    assert part.epoch == 2
    resumed = run(4, resume=tmp_path / "last.pt")
    for (name, a), b in zip(full.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert strip(resumed.history) == strip(full.history)  # same losses and metrics, bit for bit
    assert resumed.lr == pytest.approx(full.lr)


def test_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path):
    import random

    import numpy as np

    model = tiny_net(1)
    opt = torch.optim.Adam(model.parameters())
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt, epoch=3)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    state = torch.load(path, weights_only=True)  # the strict loader accepts it
    assert state["epoch"] == 3
    checkpoint.set_rng_state(state["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_failed_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = tiny_net(1)
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, model=model, epoch=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def failing_save(obj, fh, *a, **k):  # the process "dies" half-way through the write
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(path, model=model, epoch=2)
    monkeypatch.undo()
    state = checkpoint.load_checkpoint(path)
    assert state["epoch"] == 1
    assert all(torch.equal(state["model"][k], v) for k, v in before.items())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_best_model_saving_and_early_stopping(tmp_path):
    x, y = threshold_task(16)
    model = tiny_net(1)
    # lr=0: nothing improves after epoch 1, so early stopping with patience 2 ends at epoch 3
    tr = make_trainer(
        model,
        loader(x, y),
        loader(x, y),
        lr=0.0,
        early_stopping=2,
        checkpoint_dir=tmp_path,
        monitor="val_loss",
    )
    hist = tr.fit(10)
    assert len(hist) == 3 and tr.stop_training
    assert tr.best_epoch == 1
    assert checkpoint.load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert checkpoint.load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_bf16_autocast_and_channels_last_paths_learn_on_the_cpu():
    # the mixed-precision and NHWC code paths that CUDA takes by default, exercised on the CPU
    # (bf16 autocast needs no GradScaler), so that a machine without a GPU still tests them.
    # Two input channels and a 3x3 kernel: NHWC and NCHW strides differ (with one they coincide).
    x, y = threshold_task(64)
    x = torch.cat([x, x], dim=1)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    seen = {}

    def spy(module, inputs, output):
        seen["dtype"] = output.dtype
        seen["batch nhwc"] = inputs[0].is_contiguous(memory_format=torch.channels_last)
        seen["batch nchw"] = inputs[0].is_contiguous()

    model[0].register_forward_hook(spy)
    tr = make_trainer(
        model, loader(x, y, shuffle=True), loader(x, y), amp="bf16", channels_last=True
    )
    assert tr.amp_dtype == torch.bfloat16 and not tr.scaler.is_enabled()
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    hist = tr.fit(15)
    assert seen == {"dtype": torch.bfloat16, "batch nhwc": True, "batch nchw": False}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert hist[-1]["val_mean_iou"] > 0.8


# ---------------------------------------------------------------------------- GPU paths
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_channels_last_learns():
    x, y = threshold_task(64)
    tr = Trainer(
        tiny_net(1),
        nn.BCEWithLogitsLoss(),
        torch.optim.Adam([torch.zeros(1)]),
        None,
        num_classes=1,
        device="cuda",
        progress=False,
        verbose=False,
    )
    assert tr.channels_last and tr.amp_dtype in (torch.bfloat16, torch.float16)
    model = tiny_net(1)
    tr = Trainer(
        model,
        nn.BCEWithLogitsLoss(),
        torch.optim.Adam(model.parameters(), lr=0.05),
        loader(x, y, shuffle=True),
        loader(x, y),
        num_classes=1,
        device="cuda",
        progress=False,
        verbose=False,
    )
    hist = tr.fit(10)
    assert hist[-1]["val_mean_iou"] > 0.8


# ---------------------------------------------------------------------------- schedules
def test_step_and_poly_lr_closed_form():
    lrs = schedules.lr_sequence(lambda o: schedules.step_lr(o, step_size=3, gamma=0.5), 10, lr=0.2)
    assert lrs == pytest.approx([0.2 * 0.5 ** (t // 3) for t in range(10)])
    T, p, lo = 8, 0.9, 0.01
    lrs = schedules.lr_sequence(lambda o: schedules.poly_lr(o, T, power=p, min_lr=lo), 11, lr=0.1)
    assert lrs == pytest.approx([(0.1 - lo) * (1 - min(t, T) / T) ** p + lo for t in range(11)])
    assert lrs[T:] == pytest.approx([lo] * 3)


def test_cosine_warm_restarts_closed_form_and_hand_values():
    lrs = schedules.lr_sequence(lambda o: schedules.cosine_warm_restarts(o, 4), 8, lr=0.1)
    # worked by hand: 0.1 * (1 + cos(pi * t / 4)) / 2 for t = 0..3, then a restart
    hand = [0.1, 0.0853553, 0.05, 0.0146447]
    assert lrs == pytest.approx(hand + hand, abs=1e-7)
    # cycles of 2, 4, 8 steps (mult 2), floor 0.001: SGDR's formula
    lrs = schedules.lr_sequence(
        lambda o: schedules.cosine_warm_restarts(o, 2, 2, 0.001), 14, lr=0.1
    )
    expected, length, t_cur = [], 2, 0
    for _ in range(14):
        expected.append(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t_cur / length)) / 2)
        t_cur += 1
        if t_cur == length:
            t_cur, length = 0, length * 2
    assert lrs == pytest.approx(expected)
    assert schedules.cycle_ends(2, 2, total=14) == [2, 6, 14]
    assert schedules.cycle_ends(3, cycles=3) == [3, 6, 9]


def test_one_cycle_closed_form():
    total, max_lr, pct, div, fdiv = 20, 1.0, 0.25, 25.0, 1e3
    lrs = schedules.lr_sequence(
        lambda o: schedules.one_cycle(
            o, max_lr, total, pct_start=pct, div_factor=div, final_div_factor=fdiv
        ),
        total,
    )
    start, low = max_lr / div, max_lr / div / fdiv
    up_end = pct * total - 1  # the peak is reached at this (0-based) step

    def cos_between(a, b, frac):
        return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2

    expected = [
        cos_between(start, max_lr, t / up_end)
        if t <= up_end
        else cos_between(max_lr, low, (t - up_end) / (total - 1 - up_end))
        for t in range(total)
    ]
    assert lrs == pytest.approx(expected)
    assert max(lrs) == pytest.approx(max_lr) and lrs[-1] == pytest.approx(low)


def test_fit_cosine_uses_adamw_and_decays_once_to_zero_over_the_run():
    x, y = threshold_task(16)
    model = tiny_net(1)
    trainer, history = schedules.fit_cosine(
        model,
        nn.BCEWithLogitsLoss(),
        loader(x, y, batch_size=4),
        epochs=3,
        lr=0.02,
        weight_decay=0.01,
        num_classes=1,
        device="cpu",
        progress=False,
        verbose=False,
    )
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and group["weight_decay"] == 0.01
    # 4 steps an epoch, T = 12 steps: the rate at the start of epoch e is
    # lr (1 + cos(pi 4e / 12)) / 2
    assert [h["lr"] for h in history] == pytest.approx(
        [0.02 * (1 + math.cos(math.pi * 4 * e / 12)) / 2 for e in range(3)]
    )
    assert trainer.lr == pytest.approx(0.0, abs=1e-12) and history is trainer.history
    with pytest.raises(ValueError, match="epochs"):
        schedules.fit_cosine(model, nn.BCEWithLogitsLoss(), loader(x, y), epochs=0, num_classes=1)
    assert not group["fused"]  # fused kernels are for CUDA parameters


def test_adam_is_fused_on_cuda_only():
    from segtutor.train.loop import fused_option

    assert fused_option("cuda") is True and fused_option(torch.device("cuda", 1)) is True
    assert fused_option("cpu") is None and fused_option("mps") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_cosine_fuses_adamw_on_cuda():
    x, y = threshold_task(16)
    trainer, _ = schedules.fit_cosine(
        tiny_net(1),
        nn.BCEWithLogitsLoss(),
        loader(x, y, batch_size=4),
        epochs=1,
        num_classes=1,
        device="cuda",
        progress=False,
        verbose=False,
    )
    assert trainer.optimizer.param_groups[0]["fused"] is True


def test_snapshot_saver_counts_cycles_and_saves_at_the_lr_minimum(tmp_path):
    x, y = threshold_task(16)
    model = tiny_net(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train = loader(x, y, batch_size=4)  # 4 steps per epoch
    saver = schedules.SnapshotSaver(cycle_epochs=1, cycle_mult=2, directory=tmp_path)
    seen = []

    class RecordLR(schedules.Callback):
        def on_epoch_end(self, trainer, row):
            seen.append(trainer.lr)  # LR the next epoch starts with

    tr = Trainer(
        model,
        nn.BCEWithLogitsLoss(),
        opt,
        train,
        num_classes=1,
        device="cpu",
        scheduler=schedules.cosine_warm_restarts(opt, 4, 2),
        scheduler_interval="step",
        callbacks=[saver, RecordLR()],
        progress=False,
        verbose=False,
    )
    tr.fit(7)
    assert saver.epochs == [1, 3, 7]  # cycles of 1, 2, 4 epochs
    assert len(saver.snapshots) == 3 and len(list(tmp_path.glob("snapshot_*.pt"))) == 3
    # right after each cycle end the schedule restarts at the base LR
    assert [seen[e - 1] for e in saver.epochs] == pytest.approx([0.1] * 3)
    assert torch.equal(saver.snapshots[-1]["2.weight"], model.state_dict()["2.weight"])
    # snapshot files load with weights_only
    assert checkpoint.load_checkpoint(tmp_path / "snapshot_2.pt")["epoch"] == 3


def test_snapshot_ensemble_averages_probabilities(tmp_path):
    from segtutor.train import SnapshotEnsemble

    torch.manual_seed(1)
    x = torch.rand(2, 1, 5, 5)
    members = [tiny_net(3) for _ in range(3)]
    ens = SnapshotEnsemble(members).eval()
    mean_p = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    assert torch.allclose(ens(x).exp(), mean_p, atol=1e-6)
    assert torch.allclose(ens(x).softmax(1), mean_p, atol=1e-6)
    # binary members: the output is the logit of the mean probability
    bins = [tiny_net(1) for _ in range(2)]
    ens_b = SnapshotEnsemble(bins)
    assert torch.allclose(
        ens_b(x).sigmoid(), (bins[0](x).sigmoid() + bins[1](x).sigmoid()) / 2, atol=1e-6
    )
    # from checkpoint files
    paths = [checkpoint.save_checkpoint(tmp_path / f"m{i}.pt", model=m) for i, m in enumerate(bins)]
    ens_f = SnapshotEnsemble.from_state_dicts(lambda: tiny_net(1), paths)
    assert torch.allclose(ens_f(x), ens_b(x), atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        SnapshotEnsemble([])


def test_lr_range_test_sweeps_geometrically_and_leaves_the_model_alone():
    x, y = threshold_task(32)
    model = tiny_net(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tr = make_trainer(model, loader(x, y, shuffle=True), lr=0.01)
    tr.optimizer = opt
    res = schedules.lr_range_test(tr, start_lr=1e-4, end_lr=1e3, num_steps=60)
    n = len(res.lrs)
    assert res.lrs == pytest.approx([1e-4 * (1e7) ** (i / 59) for i in range(n)])
    assert res.diverged_at is not None and n < 60  # lr up to 1000 with SGD blows up
    assert 1e-4 <= res.suggested_lr <= res.diverged_at
    # the suggestion lies on the falling part of the curve, before the smoothed minimum
    k = res.lrs.index(res.suggested_lr)
    k_min = min(range(n), key=lambda i: res.losses[i])
    assert k < k_min and res.losses[k + 1] < res.losses[k] < res.losses[0]
    assert all(torch.equal(before[k2], v) for k2, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == 0.01 and tr.global_step == 0
    fig = res.plot()
    assert fig.axes[0].get_xscale() == "log"


# ---------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from segtutor.train import Trainer
    from segtutor.train import distributed as D

    # threads and device come from the environment, the same for every process of the test
    info, device = D.init_distributed()
    per_rank = int(sys.argv[2]) // info.world_size   # same global batch in both runs
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = (x[:, 0] * 3).long().clamp_max(2)
    ds = TensorDataset(x, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tr = Trainer(model, nn.CrossEntropyLoss(), opt, D.distributed_loader(ds, per_rank),
                 D.distributed_loader(ds, per_rank), num_classes=3, device=device,
                 progress=False, verbose=False)
    hist = tr.fit(3)
    if info.is_main:
        out = {"world_size": info.world_size, "history": hist, "device": str(device),
               "threads": torch.get_num_threads(),
               "weight_sum": float(sum(p.detach().double().sum() for p in tr.module.parameters()))}
        with open(sys.argv[1], "w") as fh:
            json.dump(out, fh)
    D.cleanup()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, monkeypatch):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    # Both sides run in child processes under one pinned environment, so that the comparison means
    # the same on any machine: the reference once ran inside pytest, on its GPU, and disagreed with
    # the CPU torchrun run by 7e-5. A device picked for this pytest process must not leak in.
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cuda:7")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "SEGTUTOR_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(ROOT),
    }
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
    ]
    # started together: the second torch import overlaps the first instead of adding to it
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in (
            [sys.executable, str(script), str(one), "4"],
            torchrun + [str(script), str(two), "4"],
        )
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
    import json

    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert (a["device"], b["device"]) == ("cpu", "cpu")
    assert (a["threads"], b["threads"]) == (1, 1)
    assert len(a["history"]) == len(b["history"]) == 3
    for ra, rb in zip(a["history"], b["history"]):
        for key in ("train_loss", "val_loss", "val_mean_iou", "val_pixel_accuracy"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), key
    assert b["weight_sum"] == pytest.approx(a["weight_sum"], rel=1e-5)
    assert a["history"][-1]["val_loss"] < a["history"][0]["val_loss"]  # it did train


# ---------------------------------------------------------------------------- damaged checkpoints
class _NotATensor:
    """An arbitrary pickled object: what weights_only=True must refuse to unpickle."""

    def __init__(self):
        self.payload = "code could run here"


def _damaged_checkpoints(tmp_path: Path) -> dict[str, Path]:
    good = checkpoint.save_checkpoint(tmp_path / "good.pt", model=tiny_net(1), epoch=1)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "random": bytes(
            torch.randint(
                0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
            ).tolist()
        ),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["pickled object"] = tmp_path / "object.pt"
    torch.save({"model": _NotATensor()}, paths["pickled object"])
    return paths


def test_damaged_checkpoint_names_the_file_in_fit_resume(tmp_path):
    x, y = threshold_task(16)
    for kind, path in _damaged_checkpoints(tmp_path).items():
        tr = make_trainer(tiny_net(1), loader(x, y))
        with pytest.raises(checkpoint.CheckpointError) as info:
            tr.fit(2, resume=path)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert str(path) in message and "damaged" in message, (kind, message)
        assert tr.epoch == 0 and tr.history == []  # nothing was trained from a bad file


def test_checkpoint_of_another_model_or_not_of_a_trainer_names_the_file(tmp_path):
    x, y = threshold_task(16)
    other = checkpoint.save_checkpoint(tmp_path / "other.pt", model=tiny_net(1, hidden=3), epoch=1)
    with pytest.raises(checkpoint.CheckpointError, match=f"{other}.*another model"):
        make_trainer(tiny_net(1), loader(x, y)).fit(2, resume=other)
    bare = tmp_path / "bare.pt"
    torch.save(tiny_net(1).state_dict(), bare)  # weights only, no "model"/"epoch"/"rng"
    with pytest.raises(checkpoint.CheckpointError, match=f"{bare} is not a Trainer checkpoint"):
        make_trainer(tiny_net(1), loader(x, y)).fit(2, resume=bare)


def test_resume_with_another_learning_rate_says_which_one_it_keeps(tmp_path):
    import warnings

    x, y = threshold_task(16)
    torch.manual_seed(0)
    make_trainer(tiny_net(1), loader(x, y), lr=0.05, checkpoint_dir=tmp_path).fit(1)
    # the same learning rate: resumed silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_trainer(tiny_net(1), loader(x, y), lr=0.05).fit(2, resume=tmp_path / "last.pt")
    # another one: the checkpoint's is kept, and a warning says so
    tr = make_trainer(tiny_net(1), loader(x, y), lr=0.2)
    with pytest.warns(UserWarning, match="learning rate 0.2, the checkpoint's run used 0.05"):
        tr.fit(2, resume=tmp_path / "last.pt")
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_train_one_epoch_reads_no_step_loss_on_the_host(monkeypatch):
    # issue 18: on a GPU, float(loss) at every step makes the host wait for the device; the
    # losses are read once, at the end of the epoch
    from segtutor.train import train_one_epoch

    x, y = threshold_task(32)
    model = tiny_net(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reads: list[int] = []
    real_float = torch.Tensor.__float__

    def counting_float(self):
        reads.append(1)
        return real_float(self)

    criterion = nn.BCEWithLogitsLoss()

    def loss_fn(out, target):
        return criterion(out[:, 0], target.float())

    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)
    mean = train_one_epoch(model, loss_fn, opt, loader(x, y), "cpu")
    monkeypatch.undo()
    assert reads == []  # four steps, no read of a loss
    assert math.isfinite(mean)


def test_checkpoints_keep_the_generator_of_a_batch_augmentation():
    from segtutor.data.loaders import DeviceLoader
    from segtutor.train import checkpoint as ckpt

    class Jitter:  # a batch augmentation that draws from its own generator
        def __init__(self):
            self.generator = torch.Generator().manual_seed(7)

        def __call__(self, x, y):
            return x + torch.rand(x.shape, generator=self.generator), y

    def batches(loader):
        return [x.clone() for x, _ in loader]

    x, y = torch.zeros(6, 1, 4, 4), torch.zeros(6, 4, 4)
    loader = DeviceLoader(x, y, 2, shuffle=True, seed=1, device="cpu", augment=Jitter())
    batches(loader)  # an epoch: both generators move on
    state = ckpt.loader_generator_state(loader)
    assert set(state) == {"loader_generator", "augment_generator"}
    expected = batches(loader)
    ckpt.restore_loader_generator(loader, state)
    again = batches(loader)
    assert all(torch.equal(a, b) for a, b in zip(expected, again))
    # without the augmentation's state the same shuffle gives other values
    ckpt.restore_loader_generator(loader, {"loader_generator": state["loader_generator"]})
    assert not all(torch.equal(a, b) for a, b in zip(expected, batches(loader)))
