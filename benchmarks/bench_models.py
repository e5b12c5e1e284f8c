"""Training throughput of every segtutor model, side by side with segmentation_models_pytorch.

Forward + backward images/s at 128x128 (canonical widths), measured in one run, alternating
between the two implementations of a pair so that machine noise hits both alike; printed as
ratios (segtutor / smp). On CUDA the same loop also runs with bf16 autocast and channels_last.

    .venv/bin/python benchmarks/bench_models.py [--size 128] [--batch 4] [--repeats 3]
    .venv/bin/python benchmarks/bench_models.py --quick

``--quick`` is a smoke test of the script itself: every model and every pass, the bf16 autocast +
channels_last one included (CPU autocast), at 32x32 on the CPU, one repeat. Its figures mean
nothing; it exists so that the GPU-only pass is executed before a GPU runs it.

segmentation_models_pytorch is optional (benchmark-only: ``pip install
segmentation-models-pytorch``); without it the segtutor columns are still printed and the smp
comparison is skipped with the reason. Nothing is downloaded (``encoder_weights=None``).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn

from segtutor import config
from segtutor.models import build_model, count_parameters
from segtutor.models.outputs import main_output

# our model, its options, and the smp counterpart (class name, encoder) when one exists
PAIRS: list[tuple[str, dict, tuple[str, str] | None]] = [
    ("fcn8s", {}, None),
    ("unet", {}, None),
    ("segnet", {}, None),
    ("unetpp", {}, ("UnetPlusPlus", "resnet34")),  # smp's has a ResNet34 encoder, ours the paper's
    ("resunet34", {"attention": False, "hypercolumn": False}, ("Unet", "resnet34")),
    ("resunet34", {}, None),
    ("deeplabv3", {"output_stride": 8}, ("DeepLabV3", "resnet50")),
    ("deeplabv3plus", {}, ("DeepLabV3Plus", "resnet50")),
    ("pspnet", {}, ("PSPNet", "resnet50")),
]

# --quick: the same architectures (trunks, strides, heads) at a few channels per layer, so that
# building and stepping all of them takes seconds on a CPU
QUICK_WIDTHS: dict[str, dict] = {
    "fcn8s": {"width": 0.0625, "fc_width": 32},
    "unet": {"base_width": 4},
    "segnet": {"width": 0.0625},
    "unetpp": {"base_width": 4},
    "resunet34": {"encoder_width": 0.125, "decoder_width": 8},
    "deeplabv3": {"encoder_width": 0.125, "head_width": 16},
    "deeplabv3plus": {"encoder_width": 0.125, "head_width": 16},
    "pspnet": {"encoder_width": 0.125, "head_width": 16},
}


def smp_model(cls_name: str, encoder: str, classes: int) -> nn.Module | None:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return None
    kwargs = {"encoder_weights": None, "classes": classes}
    if cls_name == "PSPNet":
        # the paper's full-depth trunk (smp's default is 3 stages); smp cannot dilate it, so its
        # pyramid runs at 1/32 (ours at 1/8) and a x32 upsampling brings the logits to full size
        kwargs["encoder_depth"] = 5
        kwargs["upsampling"] = 32
    return getattr(smp, cls_name)(encoder, **kwargs)


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def autocast() -> contextlib.AbstractContextManager:
        # a new context each step, on the inputs' device type (bf16 autocast exists on CPU too)
        if not amp:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=torch.bfloat16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(main_output(model(x)).float(), y)
        loss.backward()
        opt.step()

    return step


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench(
    size: int,
    batch: int,
    repeats: int,
    classes: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    widths: dict[str, dict] | None = None,
) -> list[dict]:
    """One table row per entry of PAIRS; ``widths`` adds size options per model (--quick)."""
    rows = []
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch, size, size), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for name, options, other in PAIRS:
        sizes = (widths or {}).get(name, {})
        models = {"segtutor": build_model(name, num_classes=classes, **sizes, **options)}
        reason = ""
        if other is not None:
            m = smp_model(other[0], other[1], classes)
            if m is None:
                reason = "segmentation_models_pytorch not installed"
            else:
                models["smp"] = m
        steps = {}
        for key, m in models.items():
            m = m.to(device).train()
            if channels_last:
                m = m.to(memory_format=torch.channels_last)
            steps[key] = step_fn(m, x, y, amp)
            steps[key]()  # warm-up (allocations, kernel selection)
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(repeats):  # alternate, so that load changes hit both
            for key, step in steps.items():
                times[key].append(timed(step, device))
        ips = {k: batch / sorted(v)[len(v) // 2] for k, v in times.items()}
        label = name + (
            "" if not options else " " + ",".join(f"{k}={v}" for k, v in options.items())
        )
        row = {
            "model": label,
            "params_M": count_parameters(models["segtutor"]) / 1e6,
            "segtutor_img_s": ips["segtutor"],
        }
        if "smp" in ips:
            row.update(
                smp=f"{other[0]}({other[1]})",
                smp_params_M=count_parameters(models["smp"]) / 1e6,
                smp_img_s=ips["smp"],
                ratio=ips["segtutor"] / ips["smp"],
            )
        elif other is not None:
            row["smp"] = f"skipped: {reason}"
        rows.append(row)
        print(format_row(row), flush=True)
        del models, steps
    return rows


def format_row(row: dict) -> str:
    line = f"{row['model']:<48} {row['params_M']:7.2f}M {row['segtutor_img_s']:8.2f} img/s"
    if "ratio" in row:
        line += (
            f" | {row['smp']:<22} {row['smp_params_M']:7.2f}M {row['smp_img_s']:8.2f} img/s"
            f" | ratio {row['ratio']:.2f}"
        )
    elif "smp" in row:
        line += f" | smp {row['smp']}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 16 on GPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="model names to run (default all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: every pass (bf16 + channels_last too) on the CPU, 32x32",
    )
    args = parser.parse_args()
    if args.only:
        PAIRS[:] = [p for p in PAIRS if p[0] in args.only]
    if args.quick:
        # batch 2: BatchNorm in train mode needs two values per channel after global pooling
        args.size, args.repeats, args.batch = 32, 1, 2
    device = torch.device("cpu") if args.quick else config.device()
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 2)
    torch.manual_seed(0)
    print(
        f"device {config.device_name(device)}; fwd+bwd+SGD step, {batch}x3x{args.size}x"
        f"{args.size}, {args.classes} classes, median of {args.repeats}"
    )
    if args.quick:
        print(
            "--quick: a smoke test at a few channels per layer (QUICK_WIDTHS); the figures "
            "say nothing about speed"
        )
    modes = [("fp32", False, False)]
    if cuda:
        torch.backends.cudnn.benchmark = True
    if cuda or args.quick:
        modes.append(("bf16 autocast + channels_last", True, True))
    for label, amp, cl in modes:
        print(f"\n== {label}\n{'model':<48} {'params':>8} {'segtutor':>14} | smp counterpart")
        bench(
            args.size,
            batch,
            args.repeats,
            args.classes,
            device,
            amp,
            cl,
            widths=QUICK_WIDTHS if args.quick else None,
        )


if __name__ == "__main__":
    main()
