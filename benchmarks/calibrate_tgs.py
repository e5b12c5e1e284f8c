"""Calibrate the difficulty of the synthetic TGS-like set (segtutor.data.make_tgs_like).

Target from the data issue: a small U-Net trained for a few minutes on a CPU reaches a TGS mAP
between 0.55 and 0.80 on held-out synthetic images, leaving room for the case study's techniques
(Lovasz loss, TGS-specific heads, TTA, snapshot ensembles) to show their effect.

Prints, side by side on the same validation images: the mAP of predicting "no salt" everywhere
(the floor set by the empty share), and the mAP of the U-Net after each epoch.

    .venv/bin/python benchmarks/calibrate_tgs.py --steps 450 --difficulty 0.5

``--quick`` is a smoke test of the script itself (seconds): 16 + 8 images, a width-4 U-Net,
2 steps. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from segtutor import config
from segtutor.data import InMemoryDataset, make_loader, make_tgs_like
from segtutor.data.transforms import batch_random_flip, pad_to_128, unpad_from_128
from segtutor.metrics import tgs_map
from segtutor.models import build_model


def evaluate(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            logits = model(pad_to_128(images[i : i + 64]))
            preds.append(unpad_from_128(logits)[:, 0] > 0)
    model.train()
    return tgs_map(torch.cat(preds), masks.bool())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument(
        "--steps",
        type=int,
        default=450,
        help="optimizer steps; 450 x 16 images at 128x128 is about 3 minutes "
        "of an uncontended 2-core CPU",
    )
    parser.add_argument("--eval-every", type=int, default=75)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test in seconds: 16 + 8 images, width 4, 2 steps",
    )
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.n_val, args.steps, args.eval_every = 16, 8, 2, 1
        args.base_width, args.batch_size = 4, 8

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = config.seed_everything(args.seed)
    print(config.describe(f"U-Net base_width={args.base_width}, {args.steps} steps"))
    t0 = time.perf_counter()
    data = make_tgs_like(args.n_train + args.n_val, seed=args.seed, difficulty=args.difficulty)
    print(
        f"generated {len(data)} images in {time.perf_counter() - t0:.1f} s "
        f"(difficulty {args.difficulty}, empty share {(data.coverage == 0).float().mean():.3f})"
    )
    n = args.n_train
    train = InMemoryDataset(data.images[:n], data.masks[:n])
    val_x, val_y = data.images[n:].unsqueeze(1), data.masks[n:]
    loader = make_loader(train, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)

    empty_map = tgs_map(torch.zeros_like(val_y, dtype=torch.bool), val_y.bool())
    print(f"baseline 'no salt anywhere': mAP {empty_map:.3f}")

    model = build_model("unet", num_classes=1, in_channels=1, base_width=args.base_width)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    step, best, score = 0, 0.0, 0.0
    start, cpu0 = time.perf_counter(), time.process_time()
    total, count = 0.0, 0
    while step < args.steps:
        for x, y in loader:
            x, y = batch_random_flip(x, y, hflip=0.5, generator=gen)
            logits = unpad_from_128(model(pad_to_128(x)))[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(x)
            count += len(x)
            if step % args.eval_every == 0 or step == args.steps:
                score = evaluate(model, val_x, val_y)
                best = max(best, score)
                print(
                    f"step {step}: train BCE {total / count:.4f}, val mAP {score:.3f} "
                    f"(wall {time.perf_counter() - start:.0f} s, "
                    f"CPU {time.process_time() - cpu0:.0f} s)",
                    flush=True,
                )
                total, count = 0.0, 0
            if step >= args.steps:
                break
    print(
        f"RESULT difficulty={args.difficulty} final mAP {score:.3f} best {best:.3f} after "
        f"{step} steps of {args.batch_size} ({step * args.batch_size / n:.1f} epochs), "
        f"CPU {time.process_time() - cpu0:.0f} s; empty baseline {empty_map:.3f}"
    )


if __name__ == "__main__":
    main()
