"""The TGS case study: the complete pipeline against the baseline U-Net + BCE, seed by seed.

Both are trained on the same synthetic TGS-like set (full mode: 4,000 training and 1,000 test
images; quick mode: the ablation chapter's 400 and 200) and scored on its test split with the
competition's metric, as the ablation chapter (``book/tgs/ablation.md``) does:

- baseline: one U-Net (base width 64 at full width) trained with BCE only on the training folds
  of fold 0, for as many epochs as the pipeline's two stages together, no snapshots, no TTA,
  threshold 0.5;
- pipeline: the recipe's defaults (:class:`segtutor.tgs.TrainOptions`): ResNet34 U-Net with
  scSE, hypercolumn, deep supervision and the empty-image head, stage 1 BCE then the Lovász
  stage with a snapshot per cosine cycle, every fold in full mode (fold 0 in quick mode), flip
  TTA, the post-processing chosen on the out-of-fold predictions.

``--seeds 0,1,2`` repeats the whole comparison per seed (the data, the folds and the initial
weights all follow the seed), and ``--fresh N`` also scores both models on N further test images
of each seed (``tgs.synth(..., seed=FRESH_SEED + s)``), which shrinks the small test split's
share of the noise. It ends with the mean and the standard deviation of the difference over the
seeds: at quick size one seed's initial weights move it by several hundredths, so one seed
decides nothing (``benchmarks/RESULTS.md``, "Six seeds of the adopted recipe").

It needs a CUDA GPU for full mode (hours on a CPU); without one it says so and exits 0, unless
``--force`` (``SEGTUTOR_QUICK=1 ... --force`` runs the comparison at the book's quick sizes, about
6 minutes a seed on 2 CPU cores). ``--quick`` is a smoke test of the script itself, seconds on the
CPU: two seeds of 24 training, 8 test and 8 fresh images, one epoch per stage, a 1/16-width
model. Its scores mean nothing. Prints the scores, the wall times and the device; copy them into
benchmarks/RESULTS.md.

On a GPU lent in calls of limited length, give a lasting ``--workdir`` (e.g. ``runs/bench_tgs``,
which git ignores) and repeat ``--resume`` until it completes: each call keeps the data and the
folds that earlier calls finished (``segtutor tgs train --resume``) and trains the rest. The
training times printed are those of the last call; add up the calls for the total.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# the fresh test images of seed s are drawn with seed FRESH_SEED + s, clear of the seeds' own data
FRESH_SEED = 1000
NAMES = ("baseline U-Net + BCE", "complete pipeline")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ArgumentTypeError unless distinct integers >= 0."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct seeds >= 0 separated by commas, e.g. 0,1,2, got {text!r}"
        )
    return seeds


def summary(differences: list[float]) -> str:
    """``mean +0.0123  SD 0.0456  pipeline ahead in 2 of 3`` (no SD for a single seed)."""
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences) if len(differences) > 1 else math.nan
    ahead = sum(d > 0 for d in differences)
    sd_text = "-" if math.isnan(sd) else f"{sd:.4f}"
    return f"mean {mean:+.4f}  SD {sd_text}  pipeline ahead in {ahead} of {len(differences)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="run even without a CUDA GPU")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test in seconds on the CPU: tiny data, model and schedule, two seeds",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help="seeds of the comparison, e.g. 0,1,2 (default 0; --quick: 0,1)",
    )
    parser.add_argument(
        "--fresh",
        type=int,
        default=None,
        metavar="N",
        help="also score both models on N fresh test images per seed (default none; --quick: 8)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where data and runs go")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse --workdir's data and the folds earlier calls finished",
    )
    args = parser.parse_args()
    if args.fresh is not None and args.fresh < 1:
        parser.error(f"--fresh must be a positive number of images, got {args.fresh}")
    if args.quick:
        os.environ["SEGTUTOR_QUICK"] = "1"
        os.environ["SEGTUTOR_DEVICE"] = "cpu"
    else:
        os.environ.setdefault("SEGTUTOR_QUICK", "0")
    seeds = args.seeds or ([0, 1] if args.quick else [0])
    n_fresh = args.fresh if args.fresh is not None else (8 if args.quick else 0)

    import torch

    from segtutor import config, tgs

    if not torch.cuda.is_available() and not (args.force or args.quick):
        print(
            "bench_tgs: no CUDA GPU here; the full-mode experiment needs one "
            "(use --quick for a CPU smoke test, --force to run it anyway)"
        )
        return 0
    if args.resume and args.workdir is None:
        parser.error("--resume needs the --workdir of the earlier calls")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="segtutor-bench-tgs-"))
    n_train, n_test = (24, 8) if args.quick else (config.pick(400, 4000), config.pick(200, 1000))
    # --quick: the smallest schedule and model that still run every stage of the recipe
    tiny = {"folds": 3, "stage1_epochs": 1, "cycle_epochs": 1, "width": 0.0625, "batch_size": 8}
    if not args.quick:
        tiny = {}
    folds = config.pick([0], None)
    print(
        f"device {config.device_name()}, {'quick' if config.is_quick() else 'full'} mode, "
        f"{n_train} train / {n_test} test images"
        + (f" (+ {n_fresh} fresh test images)" if n_fresh else "")
        + f" per seed, seeds {','.join(map(str, seeds))}, work dir {work}"
    )

    splits = ["test", "fresh"] if n_fresh else ["test"]
    differences: dict[str, list[float]] = {split: [] for split in splits}
    for seed in seeds:
        root = work / f"seed{seed}"
        folders = {"test": root / "data", "fresh": root / "fresh"}
        sizes = {"test": (n_train, n_test, seed), "fresh": (1, n_fresh, FRESH_SEED + seed)}
        for split in splits:
            n, n_split, data_seed = sizes[split]
            if not (args.resume and (folders[split] / "train.csv").is_file()):
                tgs.synth(
                    folders[split], n=n, n_test=n_split, seed=data_seed, progress=not args.quick
                )
        pipeline = tgs.TrainOptions(
            seed=seed,
            train_folds=folds,
            progress=False,
            **({**tiny, "cycles": 1} if tiny else {}),
        ).resolved()
        # the ablation chapter's rule: the baseline trains as many epochs as the whole pipeline
        epochs = pipeline.stage1_epochs + pipeline.cycles * pipeline.cycle_epochs
        baseline = tgs.TrainOptions(
            model="unet",
            seed=seed,
            train_folds=[0],
            progress=False,
            **{**tiny, "stage1_epochs": epochs, "cycles": 0},
        ).resolved()
        print(f"== seed {seed}")
        scores = {}
        for name, options in zip(NAMES, (baseline, pipeline)):
            tag = name.split()[0]
            t0 = time.perf_counter()
            run = tgs.train(root / tag, data=folders["test"], options=options, resume=args.resume)
            t_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            for split in splits:
                sub = root / f"{tag}_{split}.csv"
                if options.model == "unet":  # no post-processing, no TTA
                    tgs.predict(
                        folders[split],
                        run,
                        sub,
                        threshold=0.5,
                        min_size=0,
                        tta=False,
                        progress=False,
                    )
                else:
                    tgs.predict(folders[split], run, sub, progress=False)
                scores[name, split] = tgs.evaluate_submission(folders[split], sub)
            t_pred = time.perf_counter() - t0
            shown = "   ".join(f"{split} TGS mAP {scores[name, split]:.4f}" for split in splits)
            print(f"{name:22s} {shown}   train {t_train / 60:.1f} min   predict {t_pred:.1f} s")
        for split in splits:
            differences[split].append(scores[NAMES[1], split] - scores[NAMES[0], split])
        shown = ", ".join(f"{split} {differences[split][-1]:+.4f}" for split in splits)
        print(f"pipeline - baseline: {shown} TGS mAP")
    print(f"== pipeline - baseline over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
    for split in splits:
        print(f"{split:6s} {summary(differences[split])}")
    if args.quick and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)  # a smoke test leaves nothing behind
    return 0


if __name__ == "__main__":
    sys.exit(main())
