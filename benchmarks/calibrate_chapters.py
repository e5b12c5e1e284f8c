"""How far each claim of the book is from failing, against its seed-to-seed spread.

Executes chapters in quick mode (as the book build does) under several seed offsets
(``SEGTUTOR_SEED_OFFSET``, see ``segtutor.config.seed_everything``), reads the claims each run
records (``segtutor.claims``) and prints, per claim, whether it held in every run, the margin
(first value minus second, for a claim that compares two values) per seed, its mean and its
spread (max - min), and the ratio mean / spread. The book's rule: a claim's margin is at least
twice its seed-to-seed spread. Paste the table into ``benchmarks/RESULTS.md`` with date and machine.

    python benchmarks/calibrate_chapters.py book/architectures/fcn.md book/training/losses.md
    python benchmarks/calibrate_chapters.py --seeds 3 --all   # every chapter of _toc.yml
    python benchmarks/calibrate_chapters.py --quick            # a smoke run: one tiny chapter
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segtutor import claims  # noqa: E402


def execute(chapter: Path, offset: int, timeout: int) -> tuple[list[dict], float]:
    """Run one chapter top to bottom in quick mode under a seed offset; its claims and seconds."""
    nb = jupytext.read(chapter)
    env = {
        "SEGTUTOR_QUICK": "1",
        "SEGTUTOR_SEED_OFFSET": str(offset),
        "SEGTUTOR_PROGRESS": "0",
        "TQDM_DISABLE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    t0 = time.time()
    try:
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(chapter.parent)}},
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return claims.claims_in_notebook(nb, str(chapter.relative_to(ROOT))), time.time() - t0


def margin(record: dict) -> float | None:
    """First value minus second, for a claim that compares two values; else None."""
    values = list(record["values"].values())
    return values[0] - values[1] if len(values) >= 2 else None


def table(runs: dict[int, list[dict]]) -> list[str]:
    """Markdown rows: claim, held in all runs, margin per seed, mean, spread, mean/spread."""
    offsets = sorted(runs)
    rows = [
        "| chapter | claim | holds | margin per seed | mean | spread | mean/spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, first in enumerate(runs[offsets[0]]):
        same = [runs[o][i] for o in offsets if i < len(runs[o])]
        holds = all(r["holds"] for r in same)
        margins = [margin(r) for r in same]
        if any(m is None for m in margins):
            rows.append(f"| {first['chapter']} | {first['claim']} | {holds} | - | - | - | - |")
            continue
        mean = sum(margins) / len(margins)
        spread = max(margins) - min(margins)
        ratio = f"{mean / spread:.1f}" if spread > 0 else "inf"
        per_seed = ", ".join(f"{m:.3f}" for m in margins)
        rows.append(
            f"| {first['chapter']} | {first['claim']} | {holds} | {per_seed} | {mean:.3f} "
            f"| {spread:.3f} | {ratio} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter files (book/....md)")
    parser.add_argument("--all", action="store_true", help="every chapter in _toc.yml")
    parser.add_argument("--seeds", type=int, default=3, help="seed offsets 0..N-1 (default 3)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the transposed-convolution chapter under 2 offsets",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.quick:
        chapters, args.seeds = [ROOT / "book/foundations/transposed_conv.md"], 2
    elif args.all:
        from tests.test_book import CHAPTERS, is_notebook

        chapters = [ROOT / f"{c}.md" for c in CHAPTERS if is_notebook(c)]
    else:
        chapters = [Path(c).resolve() for c in args.chapters]
    if not chapters:
        parser.error("name chapters, or --all")
    for chapter in chapters:
        if not chapter.exists():
            parser.error(f"no such chapter: {chapter}")
    for chapter in chapters:
        runs = {}
        for offset in range(args.seeds):
            found, seconds = execute(chapter, offset, args.timeout)
            print(
                f"{chapter.relative_to(ROOT)} seed offset {offset}: {len(found)} claims, "
                f"{seconds:.0f} s",
                flush=True,
            )
            runs[offset] = found
        if runs[0]:
            print("\n".join(table(runs)), flush=True)
        else:
            print(f"{chapter.relative_to(ROOT)}: records no claim", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
