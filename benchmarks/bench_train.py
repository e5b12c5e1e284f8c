"""Trainer overhead and GPU throughput, measured side by side in one run.

1. CPU (always): one epoch of ``segtutor.train.Trainer.fit`` against a minimal hand-written loop
   (zero_grad, forward, loss, backward, step) on the same model, data and batches. Rounds
   alternate between the two so that load from other processes hits both alike; the overhead is
   the ratio of the medians. Target: under 5 %.
2. CUDA (when present): images/s of ``resunet34`` on 128x128 inputs for an fp32 DataLoader loop,
   AMP + channels_last, AMP + channels_last + GPU-resident data (``DeviceLoader`` with GPU flips),
   and the same plus ``torch.compile``; printed as ratios to the fp32 loop.

Usage: ``python benchmarks/bench_train.py [--rounds 7] [--gpu-steps 60]``

``--quick`` is a smoke test of the script itself, a few seconds on a CPU: both parts at tiny
sizes, the GPU part on the CPU (bf16 CPU autocast for AMP; ``torch.compile`` with dynamo's
``eager`` backend, which traces the model but skips minutes of code generation). Its figures mean
nothing; it exists so that the CUDA-only code runs before a GPU does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from unittest import mock

import torch
from torch import nn


def cpu_overhead(rounds: int, n: int = 32, size: int = 64, batch: int = 8) -> dict[str, float]:
    from segtutor.data import InMemoryDataset, make_loader, make_shapes
    from segtutor.models import build_model
    from segtutor.train import Trainer

    shapes = make_shapes(n, num_classes=4, size=size, seed=0)
    loader = make_loader(InMemoryDataset(shapes.images, shapes.masks), batch, shuffle=False)
    crit = nn.CrossEntropyLoss(ignore_index=255)

    torch.manual_seed(0)
    hand_model = build_model("unet", num_classes=4, in_channels=3, base_width=8)
    torch.manual_seed(0)
    tr_model = build_model("unet", num_classes=4, in_channels=3, base_width=8)
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=0.01, momentum=0.9)
    tr_opt = torch.optim.SGD(tr_model.parameters(), lr=0.01, momentum=0.9)
    trainer = Trainer(
        tr_model, crit, tr_opt, loader, num_classes=4, device="cpu", progress=False, verbose=False
    )

    def hand_epoch() -> None:
        hand_model.train()
        for x, y in loader:
            hand_opt.zero_grad(set_to_none=True)
            loss = crit(hand_model(x), y)
            loss.backward()
            hand_opt.step()
            float(loss.detach())  # any real loop reads the loss (print/log); so does the Trainer

    hand_epoch()
    trainer.fit(1)  # warm-up: allocator, first-call dispatch
    hand, mine = [], []
    # CPU seconds of this process too: with one thread they exclude the time spent waiting for a
    # core that another process holds, the main noise on a shared machine
    cpu: dict[str, list[float]] = {"hand": [], "trainer": []}
    faults = {"hand": 0, "trainer": 0}
    for r in range(rounds):
        order = [("hand", hand_epoch), ("trainer", lambda: trainer.fit(trainer.epoch + 1))]
        if r % 2:
            order.reverse()  # alternate who goes first
        for name, fn in order:
            f0 = _minor_faults()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            (hand if name == "hand" else mine).append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            faults[name] += _minor_faults() - f0
    h, m = statistics.median(hand), statistics.median(mine)
    return {
        "hand_s": h,
        "trainer_s": m,
        "overhead": m / h - 1,
        "cpu_overhead": statistics.median(cpu["trainer"]) / statistics.median(cpu["hand"]) - 1,
        "hand_faults": faults["hand"] / rounds,
        "trainer_faults": faults["trainer"] / rounds,
        "pairwise": statistics.median([b / a - 1 for a, b in zip(hand, mine)]),
        # the fastest round of each is the one least disturbed by other processes
        "best": min(mine) / min(hand) - 1,
    }


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing: Windows).

    Each one is a fresh page of memory from the OS; a loop whose peak memory is higher takes more
    of them per epoch, which costs time that has nothing to do with its Python bookkeeping."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bookkeeping_us(steps: int = 400, repeats: int = 5) -> tuple[float, float]:
    """Microseconds per step of both loops on a model that does almost no arithmetic (a 1x1 conv
    on [8, 1, 8, 8]): what is left is the loop's own bookkeeping."""
    from segtutor.train import Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=g)
    batches = [(x, (x[:, 0] > 0.5).float())] * steps
    crit = nn.BCEWithLogitsLoss()
    hand_model, tr_model = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=0.01)
    trainer = Trainer(
        tr_model,
        crit,
        torch.optim.SGD(tr_model.parameters(), lr=0.01),
        batches,
        num_classes=1,
        device="cpu",
        progress=False,
        verbose=False,
    )

    def hand_epoch() -> None:
        for xb, yb in batches:
            hand_opt.zero_grad(set_to_none=True)
            loss = crit(hand_model(xb)[:, 0], yb)
            loss.backward()
            hand_opt.step()
            float(loss.detach())

    hand, mine = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hand_epoch()
        hand.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.fit(trainer.epoch + 1)
        mine.append(time.perf_counter() - t0)
    return min(hand) / steps * 1e6, min(mine) / steps * 1e6


def gpu_throughput(
    steps: int, batch: int = 32, size: int = 128, n: int = 512, quick: bool = False
) -> dict[str, float]:
    """Images/s of each GPU variant; ``quick``: the same variants on the CPU, tiny (smoke test)."""
    from segtutor.data import InMemoryDataset, make_loader, make_tgs_like
    from segtutor.data.transforms import batch_random_flip, resize_to
    from segtutor.models import build_model
    from segtutor.train import DeviceLoader, Trainer

    dev = torch.device("cpu" if quick else "cuda")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    # "auto" AMP is off on a CPU: ask for bf16 there so that the autocast path runs
    amp_on = "bf16" if quick else "auto"
    widths = {"encoder_width": 0.125, "decoder_width": 8} if quick else {}
    warmup, workers = (2, 1) if quick else (10, 4)
    data = make_tgs_like(n, seed=0)
    images = resize_to(data.images[:, None], size)
    masks = (resize_to(data.masks[:, None], size, mask=True)[:, 0] > 0.5).float()
    dataset = InMemoryDataset(images, masks)

    def run(amp, channels_last, resident, compile_) -> float:
        torch.manual_seed(0)
        model = build_model("resunet34", num_classes=1, in_channels=1, **widths)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if resident:
            gen = torch.Generator(device=dev).manual_seed(0)
            loader = DeviceLoader(
                images,
                masks,
                batch,
                shuffle=True,
                device=dev,
                drop_last=True,
                augment=lambda x, y: batch_random_flip(x, y, generator=gen),
            )
        else:
            loader = make_loader(dataset, batch, shuffle=True, num_workers=workers, drop_last=True)
        compile_ctx = (
            mock.patch.object(torch, "compile", functools.partial(torch.compile, backend="eager"))
            if quick and compile_
            else contextlib.nullcontext()
        )
        with compile_ctx:
            tr = Trainer(
                model,
                nn.BCEWithLogitsLoss(),
                opt,
                loader,
                num_classes=1,
                device=dev,
                amp=amp,
                channels_last=channels_last,
                compile=compile_,
                progress=False,
                verbose=False,
            )
        it = iter(_forever(loader))
        for _ in range(warmup):  # warm-up (and compilation)
            tr.train_step(next(it))
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step(next(it))
        sync()
        return steps * batch / (time.perf_counter() - t0)

    out = {
        "fp32 DataLoader": run(False, False, False, False),
        "AMP + channels_last": run(amp_on, True, False, False),
        "AMP + channels_last + GPU-resident": run(amp_on, True, True, False),
    }
    try:
        out["AMP + channels_last + GPU-resident + compile"] = run(amp_on, True, True, True)
    except Exception as err:  # compile needs a working toolchain
        if quick:
            raise  # the eager backend needs no toolchain: a failure here is the script's own
        print(f"torch.compile variant skipped: {err!r}")
    return out


def _forever(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gpu-steps", type=int, default=60)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for the CPU comparison (1: steadier on a shared machine)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test in seconds: tiny sizes, the GPU variants on the CPU",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.quick:
        args.rounds, args.gpu_steps = 1, 2
        print("--quick: a smoke test at tiny sizes; the figures say nothing about speed")
    n, size = (16, 32) if args.quick else (32, 64)
    r = cpu_overhead(args.rounds, n=n, size=size)
    print(
        f"CPU, unet base_width=8, {n} images {size}x{size}, batch 8, one epoch "
        f"(median of {args.rounds}):"
    )
    print(f"  hand-written loop {r['hand_s'] * 1e3:8.1f} ms")
    print(f"  Trainer.fit       {r['trainer_s'] * 1e3:8.1f} ms")
    print(
        f"  overhead {r['overhead'] * 100:+.1f} % (ratio of medians), "
        f"{r['pairwise'] * 100:+.1f} % (median of paired rounds), "
        f"{r['best'] * 100:+.1f} % (fastest rounds); target < 5 %: "
        f"{'met' if r['overhead'] < 0.05 else 'NOT met'}"
    )
    print(
        f"  overhead in CPU time {r['cpu_overhead'] * 100:+.1f} % (ratio of medians; "
        "insensitive to waiting for a busy core)"
    )
    print(
        f"  minor page faults per epoch: hand-written loop {r['hand_faults']:.0f}, "
        f"Trainer.fit {r['trainer_faults']:.0f}"
    )
    h_us, t_us = bookkeeping_us(40, 2) if args.quick else bookkeeping_us()
    print(
        f"loop bookkeeping, 1x1 conv on [8, 1, 8, 8]: hand {h_us:.0f} us/step, "
        f"Trainer {t_us:.0f} us/step "
        f"(+{t_us - h_us:.0f} us per step; a step of the U-Net above takes "
        f"{r['hand_s'] / (n // 8) * 1e3:.0f} ms)"
    )
    if torch.cuda.is_available() or args.quick:
        if args.quick:
            g = gpu_throughput(args.gpu_steps, batch=2, size=32, n=8, quick=True)
            print("CPU standing in for CUDA (--quick), resunet34 at 1/8 width 32x32, batch 2:")
        else:
            g = gpu_throughput(args.gpu_steps)
            print(f"CUDA {torch.cuda.get_device_name()}, resunet34 128x128, batch 32:")
        base = g["fp32 DataLoader"]
        for name, ips in g.items():
            print(f"  {name:48s} {ips:8.1f} images/s  {ips / base:5.2f}x")
    else:
        print("CUDA: no GPU present, the GPU variants were not measured")


if __name__ == "__main__":
    main()
