"""One device session of the GPU work: the full-mode chapters still owed a record, within a budget.

A GPU is lent for about 15 minutes at a time, 10 minutes a command. This script makes one such
command count and lets the next session pick up where this one stopped:

    python scripts/gpu_session.py --budget-s 540 --out "$OUT" [--bench] [--dry-run]

1. ``--bench``: the GPU benchmarks first (``bench_train.py``, then ``bench_models.py`` for the
   TGS model and the U-Net), their output kept under ``OUT/bench/``.
2. Every chapter of :data:`TRAINING_CHAPTERS`, in that order (short ones first, the TGS chapters
   last; a chapter an earlier call had to stop goes after those never tried), whose full-size
   record (``book/results/full/<chapter>.json``) is missing, stale (its code changed) or
   incomplete (its run stopped before the end), is executed in full mode by
   ``scripts/run_chapter_script.py``, each under the time that is left. A chapter cut off by
   the budget leaves a record marked incomplete; on the next call, when the machine is still
   warm, it continues from ``runs/book/``: ``tgs/training`` its interrupted run, every other
   chapter the fits it had started or finished (:func:`segtutor.train.fit_resumable`), and its
   record's ``wall_s`` adds up the calls. A tree copied without ``.git`` takes the commit the
   records name from ``$SEGTUTOR_COMMIT``.
3. The records written (to commit), the figures and a log per chapter are copied under ``OUT``,
   with ``OUT/session.json``: what ran, how long, what is left.

``--dry-run`` prints the plan and runs nothing. Exit code 1 when a chapter failed (not when the
budget ran out).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: segtutor from this checkout
    sys.path.insert(0, str(ROOT))

# Every chapter that trains a model, in the order a GPU session runs them: the short ones first,
# so one session records several; the TGS chapters last (training is the long one, and the
# inference and ablation chapters reuse its run folder). tests/test_book.py checks that each of
# them claims to beat its trivial baseline.
TRAINING_CHAPTERS = [
    "book/architectures/pspnet.md",
    "book/architectures/deeplab.md",
    "book/architectures/fcn.md",
    "book/architectures/unetpp.md",
    "book/architectures/unet_segnet.md",
    "book/architectures/pretraining.md",
    "book/architectures/comparison.md",
    "book/training/overfitting.md",
    "book/training/training_monitoring.md",
    "book/training/losses.md",
    "book/tgs/training.md",
    "book/tgs/inference.md",
    "book/tgs/ablation.md",
]
BENCHMARKS = [
    ("bench_train", ["benchmarks/bench_train.py"]),
    ("bench_models", ["benchmarks/bench_models.py", "--only", "resunet34", "unet"]),
]
# below this many seconds a chapter is not started: it could not finish, and the machine's time
# is better left to the next session
MIN_START_S = 60.0


@dataclass
class Item:
    """One piece of the session: a benchmark or a chapter, and what became of it."""

    name: str
    status: str  # "pending", "done before", "recorded", "stopped at the budget", "failed ..."
    reason: str = ""
    seconds: float = 0.0


def owed(chapters: list[str], root: Path) -> list[Item]:
    """The chapters among ``chapters`` whose full-size record is missing, stale or incomplete
    (status ``pending``, with the reason), and the others (``done before``).

    In the order they should run: first the chapters never tried (or changed since), then those
    an earlier call stopped before their end, so that a chapter longer than one call's budget
    cannot take every call's time while the others wait (``tgs/training`` still advances each
    time it runs: it resumes inside its fold).
    """
    from segtutor import results

    fresh, retried, done = [], [], []
    for chapter in chapters:
        found = results.full_size(chapter, root=root)
        if found.record is None:
            fresh.append(Item(chapter, "pending", "no record"))
        elif found.stale is not None:
            reason = found.stale.split("; run `")[0]
            cut = found.record.get("complete") is not True
            (retried if cut else fresh).append(Item(chapter, "pending", reason))
        else:
            done.append(Item(chapter, "done before", found.message))
    return fresh + retried + done


def _run(cmd: list[str], timeout_s: float, log: Path, cwd: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, its output to the console and ``log``; stop the
    whole group at ``timeout_s`` (exit code None then). Returns (exit code, seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group: a timeout stops the DataLoader workers too
        )

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                out.write(line)

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = None
        reader.join(timeout=10)
        if code is None:
            out.write(f"\n[stopped at the budget after {timeout_s:.0f} s]\n")
    sys.stdout.flush()
    return code, time.monotonic() - t0


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL 10 s later if it is still there."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def session(
    chapters: list[str],
    budget_s: float,
    out: Path,
    root: Path = ROOT,
    bench: bool = False,
    dry_run: bool = False,
    min_start_s: float = MIN_START_S,
) -> list[Item]:
    """Run what is owed within ``budget_s`` seconds (see the module's docstring); the items."""
    if not (isinstance(budget_s, (int, float)) and budget_s > 0):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    unknown = [c for c in chapters if not (root / c).is_file()]
    if unknown:
        raise ValueError(f"chapters: no such chapter under {root}: {unknown}")
    from segtutor import results
    from segtutor.fileio import atomic_write_text

    deadline = time.monotonic() + budget_s
    items = [Item(name, "pending", "--bench") for name, _ in BENCHMARKS] if bench else []
    items += owed(chapters, root)
    print("plan:")
    for item in items:
        print(f"  {item.name}: {item.status} ({item.reason})")
    if dry_run:
        return items
    out.mkdir(parents=True, exist_ok=True)
    scripts = dict(BENCHMARKS)
    for item in items:
        if item.status != "pending":
            continue
        left = deadline - time.monotonic()
        if left < min_start_s:
            item.status, item.reason = "not reached", f"{max(left, 0):.0f} s of the budget left"
            continue
        if item.name in scripts:
            script, *options = scripts[item.name]
            cmd = [sys.executable, str(ROOT / script), *options]
            log = out / "bench" / f"{item.name}.txt"
        else:
            stem = results.record_path(item.name, root).stem  # tgs-training, as the record
            cmd = [
                sys.executable,
                str(ROOT / "scripts" / "run_chapter_script.py"),
                item.name,
                "--full",
                "--root",
                str(root),
                "--figures",
                str(out / "figures" / stem),
            ]
            log = out / "logs" / f"{stem}.log"
        print(f"\n=== {item.name} ({left:.0f} s of the budget left)", flush=True)
        code, item.seconds = _run(cmd, left, log, ROOT if item.name in scripts else root)
        if code is None:
            item.status = "stopped at the budget"
        elif code == 0:
            item.status = "recorded" if item.name not in scripts else "measured"
        else:
            item.status = f"failed (exit {code})"
        if item.name not in scripts:
            record = results.record_path(item.name, root)
            if record.is_file():
                target = out / "results" / "full" / record.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(record, target)
    left_over = [i.name for i in items if i.status in ("not reached", "stopped at the budget")]
    import torch

    from segtutor import config

    summary = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": config.device_name(),  # what RESULTS.md records beside the figures
        "torch": torch.__version__,
        "budget_s": budget_s,
        "items": [asdict(i) for i in items],
        "left": left_over,
    }
    atomic_write_text(out / "session.json", json.dumps(summary, indent=1) + "\n")
    print("\nsession:")
    for item in items:
        print(f"  {item.seconds:6.0f} s  {item.status:22s} {item.name}")
    if left_over:
        print(f"left for the next call ({len(left_over)}): {', '.join(left_over)}")
    print(f"records to commit: {out / 'results' / 'full'} -> book/results/full/")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget-s", type=float, default=540.0, help="seconds this call may use (default 540)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_session_out"), help="where to copy what it writes"
    )
    parser.add_argument("--bench", action="store_true", help="run the GPU benchmarks first")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument(
        "--min-start-s",
        type=float,
        default=MIN_START_S,
        help=f"start nothing with less than this left (default {MIN_START_S:g})",
    )
    parser.add_argument(
        "--chapters", nargs="+", default=None, help="these chapters instead of every training one"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the folder that holds book/ (default: this repo)"
    )
    args = parser.parse_args(argv)
    try:
        items = session(
            args.chapters or TRAINING_CHAPTERS,
            args.budget_s,
            args.out,
            args.root.resolve(),
            args.bench,
            args.dry_run,
            args.min_start_s,
        )
    except ValueError as err:
        parser.error(str(err))
    return 1 if any(i.status.startswith("failed") for i in items) else 0


if __name__ == "__main__":
    sys.exit(main())
