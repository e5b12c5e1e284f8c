"""The TGS case study in full mode: the complete pipeline against the baseline U-Net + BCE.

Both are trained on the same synthetic TGS-like set (4,000 training and 1,000 test images,
``segtutor tgs synth``) and scored on its test split with the competition's metric:

- baseline: one U-Net (base width 64) trained with BCE only on 4 of the 5 folds, no snapshots,
  no TTA, threshold 0.5;
- pipeline: ResNet34 U-Net with scSE, hypercolumn, deep supervision and the empty-image head,
  stage 1 BCE + stage 2 Lovász hinge (elu+1) with 4 cosine cycles and a snapshot per cycle,
  5 folds, flip TTA, threshold and minimum component size chosen on the out-of-fold predictions.

It needs a CUDA GPU (hours on a CPU); without one it says so and exits 0, unless ``--force``.
``--quick`` is a smoke test of the script itself, seconds on the CPU: the same two runs, predictions
and scores on 24 training and 8 test images, one epoch per stage, a 1/16-width model. Its scores
mean nothing. (``SEGTUTOR_QUICK=1 ... --force`` runs the comparison at the book's quick-mode sizes.)
Prints both scores, the wall times and the device; copy them into benchmarks/RESULTS.md.

On a GPU lent in calls of limited length, give a lasting ``--workdir`` (e.g. ``runs/bench_tgs``,
which git ignores) and repeat ``--resume`` until it completes: each call keeps the data and the
folds that earlier calls finished (``segtutor tgs train --resume``) and trains the rest. The
training times printed are those of the last call; add up the calls for the total.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="run even without a CUDA GPU")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test in seconds on the CPU: tiny data, model and schedule",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where data and runs go")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse --workdir's data and the folds earlier calls finished",
    )
    args = parser.parse_args()
    if args.quick:
        os.environ["SEGTUTOR_QUICK"] = "1"
        os.environ["SEGTUTOR_DEVICE"] = "cpu"
    else:
        os.environ.setdefault("SEGTUTOR_QUICK", "0")

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
    n_train, n_test = (24, 8) if args.quick else (config.pick(96, 4000), config.pick(32, 1000))
    # --quick: the smallest schedule and model that still run every stage of the recipe
    tiny = {"folds": 3, "stage1_epochs": 1, "cycle_epochs": 1, "width": 0.0625, "batch_size": 8}
    if not args.quick:
        tiny = {}
    data = work / "data"
    if not (args.resume and (data / "train.csv").is_file()):
        tgs.synth(data, n=n_train, n_test=n_test, seed=0, progress=not args.quick)
    folds = config.pick([0], None)
    print(
        f"device {config.device_name()}, {'quick' if config.is_quick() else 'full'} mode, "
        f"{n_train} train / {n_test} test images, work dir {work}"
    )

    results = {}
    for name, options, post in [
        (
            "baseline U-Net + BCE",
            tgs.TrainOptions(model="unet", cycles=0, train_folds=[0], progress=False, **tiny),
            "fixed",
        ),
        (
            "complete pipeline",
            tgs.TrainOptions(
                train_folds=folds, progress=False, **{**tiny, "cycles": 1} if tiny else {}
            ),
            "auto",
        ),
    ]:
        t0 = time.perf_counter()
        run = tgs.train(work / name.split()[0], data=data, options=options, resume=args.resume)
        t_train = time.perf_counter() - t0
        sub = work / f"{name.split()[0]}.csv"
        t0 = time.perf_counter()
        if post == "fixed":
            tgs.predict(data, run, sub, threshold=0.5, min_size=0, tta=False, progress=False)
        else:
            tgs.predict(data, run, sub, progress=False)
        t_pred = time.perf_counter() - t0
        score = tgs.evaluate_submission(data, sub)
        results[name] = (score, t_train, t_pred)
        print(
            f"{name:22s} test TGS mAP {score:.4f}   train {t_train / 60:.1f} min   "
            f"predict {t_pred:.1f} s"
        )
    (b, *_), (p, *_) = results.values()
    print(f"pipeline - baseline: {p - b:+.4f} TGS mAP")
    if args.quick and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)  # a smoke test leaves nothing behind
    return 0


if __name__ == "__main__":
    sys.exit(main())
