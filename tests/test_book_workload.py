"""Each chapter's first line states the workload of the mode it runs in.

The top cell of a chapter prints ``config.describe(...)``: the device, the mode and what the
chapter computes. Typed as a string, the quick-mode text was printed in full mode too ("full mode:
fold 0 of 3 on 96 synthetic images" while 4,000 images trained for 30 epochs). Here the cells up
to that call run in both modes (only those cells: they set sizes and print, nothing trains) and
the two workloads must differ, unless the chapter says (some of) its work is the same in both
modes.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import jupytext
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "book").rglob("*.md")
    if "config.describe(" in p.read_text()
)
SAME_IN_BOTH = "the same in both modes"


def first_line(chapter: str, quick: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the chapter's cells print up to and including its ``config.describe`` call."""
    monkeypatch.setenv("SEGTUTOR_QUICK", "1" if quick else "0")
    monkeypatch.setenv("SEGTUTOR_DEVICE", "cpu")
    threads = torch.get_num_threads()
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            for cell in jupytext.read(ROOT / chapter).cells:
                if cell.cell_type != "code":
                    continue
                exec(compile(cell.source, chapter, "exec"), namespace)  # noqa: S102
                if "config.describe(" in cell.source:
                    break
    finally:
        torch.set_num_threads(threads)  # a top cell may choose its threads
    printed = out.getvalue().splitlines()
    starts = [k for k, line in enumerate(printed) if line.startswith("device ")]
    assert len(starts) == 1, f"{chapter}: expected one 'device ...' line, got {out.getvalue()!r}"
    # describe() wraps at 88 columns: its indented continuation lines belong to the workload
    k = starts[0] + 1
    while k < len(printed) and printed[k].startswith(" "):
        k += 1
    return " ".join(line.strip() for line in printed[starts[0] : k])


def test_chapters_are_found():
    assert len(CHAPTERS) >= 20


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_first_line_states_the_workload_of_the_mode(chapter, monkeypatch):
    quick = first_line(chapter, True, monkeypatch)
    full = first_line(chapter, False, monkeypatch)
    assert ", quick mode" in quick and ", full mode" in full
    work_quick = quick.split(" mode", 1)[1]
    work_full = full.split(" mode", 1)[1]
    if not work_quick:  # describe() without a workload: the device and the mode only
        assert not work_full
        return
    # neither mode's text may speak of the other mode's sizes
    assert "full mode" not in work_quick and "quick mode" not in work_full, (quick, full)
    if SAME_IN_BOTH not in work_quick:
        assert work_full != work_quick, f"{chapter} prints the same workload in both modes"
