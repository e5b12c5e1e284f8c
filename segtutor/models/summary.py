"""``summary(model, input_size)``: parameters, FLOPs, output stride and measured speed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segtutor import checks

from .outputs import main_output


@dataclass
class ModelSummary:
    """What :func:`summary` measured. FLOPs count a multiply-add as 2 (MACs = FLOPs / 2)."""

    name: str
    params: int
    trainable_params: int
    flops: int  # forward pass, whole batch
    output_stride: int | None  # input size / size of the coarsest feature map
    forward_ms: float  # median wall time of one forward pass (batch), eval mode
    backward_ms: float  # median wall time of forward + backward (batch), train mode
    input_size: tuple[int, ...]

    @property
    def macs(self) -> int:
        return self.flops // 2

    def as_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs}

    def __str__(self) -> str:
        os_ = f"1/{self.output_stride}" if self.output_stride else "?"
        return (
            f"{self.name}: {self.params / 1e6:.2f}M params "
            f"({self.trainable_params / 1e6:.2f}M trainable), "
            f"{self.flops / 1e9:.2f} GFLOPs for {tuple(self.input_size)}, output stride {os_}, "
            f"forward {self.forward_ms:.1f} ms, forward+backward {self.backward_ms:.1f} ms"
        )


def _output_stride(model: nn.Module, x: torch.Tensor) -> int | None:
    """``model.output_stride`` when the model states it; otherwise measured: the input height
    over the smallest height produced by a spatial (kernel > 1 or strided) convolution or pool,
    leaving out global/adaptive pooling branches whose 1x1 maps are context, not resolution."""
    stated = getattr(model, "output_stride", None)
    if stated:
        return int(stated)
    heights: list[int] = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and inputs[0].shape[-1] > 1:
            heights.append(output.shape[-2])

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, kinds) and not (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return x.shape[-2] // min(heights) if heights else None


def _time(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def summary(
    model: nn.Module,
    input_size: tuple[int, ...] = (2, 3, 128, 128),
    device: torch.device | str | None = None,
    repeats: int = 3,
    name: str | None = None,
) -> ModelSummary:
    """Count and time ``model`` on a random input of ``input_size = (B, C, H, W)``.

    Parameters are counted once each; FLOPs of one forward pass come from
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, 2 per
    multiply-add); times are the median of ``repeats`` runs after one warm-up, in milliseconds,
    forward in eval mode and forward+backward in train mode. The model's train/eval mode is
    restored afterwards; its parameter gradients are cleared. Use a batch of at least 2: the
    global-pooling branches of ASPP/PPM cannot batch-normalise one image in train mode.
    """
    if len(input_size) != 4:
        raise ValueError(f"input_size must be (B, C, H, W) positive ints, got {input_size!r}")
    input_size = tuple(checks.positive_int(f"input_size[{i}]", s) for i, s in enumerate(input_size))
    checks.positive_int("repeats", repeats)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    x = torch.randn(*input_size, device=device)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    try:
        model.eval()
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                model(x)
            flops = int(counter.get_total_flops())
            stride = _output_stride(model, x)
            model(x)  # warm-up
            fwd = _time(lambda: model(x), repeats, device)
        model.train()

        def step() -> None:
            main_output(model(x)).float().mean().backward()

        step()
        bwd = _time(step, repeats, device)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return ModelSummary(
        name or type(model).__name__, params, trainable, flops, stride, fwd, bwd, tuple(input_size)
    )
