"""scripts/gpu_session.py: one GPU session runs the full-mode chapters still owed a record,
within a time budget, and the next session picks up what is left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import gpu_session
from segtutor import results

ROOT = Path(__file__).resolve().parents[1]

FAST = """# Fast

```{code-cell} ipython3
from myst_nb import glue

glue("fast_score", 0.75, display=False)
```
"""

SLOW = """# Slow

```{code-cell} ipython3
import time
from myst_nb import glue

glue("slow_started", 1, display=False)
print("slow chapter started", flush=True)
time.sleep(600)
glue("slow_done", 1, display=False)
```
"""


# trains 40 epochs of 0.25 s each, writing a resume point after every epoch (every_s=0)
RESUMABLE = """# Resumable

```{code-cell} ipython3
import time

import torch
from myst_nb import glue
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segtutor.train import Callback, Trainer, fit_resumable


class Slow(Callback):
    def on_epoch_end(self, trainer, row):
        print(f"trained epoch {row['epoch']}", flush=True)
        time.sleep(0.25)


torch.manual_seed(0)
x = torch.rand(8, 1, 4, 4)
y = (x[:, 0] > 0.5).float()
model = nn.Conv2d(1, 1, 1)
trainer = Trainer(
    model,
    nn.BCEWithLogitsLoss(),
    torch.optim.SGD(model.parameters(), lr=0.1),
    DataLoader(TensorDataset(x, y), batch_size=4),
    num_classes=1,
    device="cpu",
    callbacks=[Slow()],
    progress=False,
    verbose=False,
)
history = fit_resumable(trainer, 40, "tiny", every_s=0)
glue("epochs_in_history", len(history), display=False)
glue("final_loss", history[-1]["train_loss"], display=False)
```
"""


@pytest.fixture
def book(tmp_path: Path) -> Path:
    (tmp_path / "book" / "demo").mkdir(parents=True)
    (tmp_path / "book" / "demo" / "fast.md").write_text(FAST)
    (tmp_path / "book" / "demo" / "slow.md").write_text(SLOW)
    return tmp_path


def _session(
    book: Path,
    out: Path,
    budget_s: float,
    *extra: str,
    chapters: tuple[str, ...] = ("book/demo/fast.md", "book/demo/slow.md"),
    env: dict[str, str] | None = None,
):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "gpu_session.py"),
        "--root",
        str(book),
        "--out",
        str(out),
        "--budget-s",
        str(budget_s),
        "--min-start-s",
        "1",
        "--chapters",
        *chapters,
        *extra,
    ]
    env = {"PATH": "/usr/bin:/bin", "SEGTUTOR_DEVICE": "cpu", "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_session_records_what_fits_and_leaves_the_rest_for_the_next(book, tmp_path):
    out = tmp_path / "out"
    dry = _session(book, out, 20, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "book/demo/fast.md: pending (no record)" in dry.stdout
    assert not out.exists()  # the plan only

    first = _session(book, out, 20)
    assert first.returncode == 0, first.stdout + first.stderr  # out of time is not a failure
    summary = json.loads((out / "session.json").read_text())
    assert summary["device"].startswith("cpu") and summary["budget_s"] == 20
    status = {i["name"]: i["status"] for i in summary["items"]}
    assert status == {"book/demo/fast.md": "recorded", "book/demo/slow.md": "stopped at the budget"}
    assert summary["left"] == ["book/demo/slow.md"]
    slow = next(i for i in summary["items"] if i["name"] == "book/demo/slow.md")
    assert slow["seconds"] < 60  # stopped at the budget, not after its 600 s sleep
    copied = json.loads((out / "results" / "full" / "demo-fast.json").read_text())
    assert copied["values"] == {"fast_score": 0.75} and copied["complete"] is True
    # the cut-off chapter left a record of what it measured, marked incomplete
    cut = results.full_size("book/demo/slow.md", root=book)
    assert cut.record["values"] == {"slow_started": 1.0}
    assert "before the chapter's end" in cut.stale
    # the runner's last write on SIGTERM: the record says how long the run went on
    assert cut.record["wall_s"] > 5 and cut.record["complete"] is False
    log = (out / "logs" / "demo-slow.log").read_text()
    assert "slow chapter started" in log and "[stopped at the budget" in log
    assert "book/demo/slow.md: stopped (SIGTERM) in cell 1 of 1" in log

    # the next session skips what is recorded and owes only the cut-off chapter
    again = _session(book, tmp_path / "out2", 5, "--dry-run")
    assert "book/demo/fast.md: done before" in again.stdout
    assert "book/demo/slow.md: pending (the full-mode run stopped after" in again.stdout
    # a chapter never tried runs before one that an earlier call had to stop
    (book / "book" / "demo" / "new.md").write_text(FAST.replace("fast_score", "new_score"))
    order = gpu_session.owed(["book/demo/slow.md", "book/demo/new.md", "book/demo/fast.md"], book)
    assert [(i.name, i.status) for i in order] == [
        ("book/demo/new.md", "pending"),
        ("book/demo/slow.md", "pending"),
        ("book/demo/fast.md", "done before"),
    ]


def test_a_failing_chapter_fails_the_session_and_a_changed_one_is_owed_again(book, tmp_path):
    fast = book / "book" / "demo" / "fast.md"
    items = gpu_session.session(["book/demo/fast.md"], 100, tmp_path / "o1", book, min_start_s=1)
    assert [i.status for i in items] == ["recorded"]
    fast.write_text(fast.read_text().replace("0.75", "0.5"))  # the code changed: stale
    (plan,) = gpu_session.owed(["book/demo/fast.md"], book)
    assert plan.status == "pending" and "the chapter's code" in plan.reason
    fast.write_text(fast.read_text().replace('glue("fast_score", 0.5', "1 / 0  #"))
    proc = _session(book, tmp_path / "o2", 100, chapters=("book/demo/fast.md",))
    assert proc.returncode == 1
    assert "failed (exit 1)" in proc.stdout


def test_a_chapter_stopped_at_the_budget_continues_its_fit_in_the_next_session(book, tmp_path):
    (book / "book" / "demo" / "resumable.md").write_text(RESUMABLE)
    chapter = ("book/demo/resumable.md",)
    env = {"SEGTUTOR_RUN_CACHE": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    first = _session(book, tmp_path / "o1", 8, chapters=chapter, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    log = (tmp_path / "o1" / "logs" / "demo-resumable.log").read_text()
    done_first = [int(line.split()[-1]) for line in log.splitlines() if "trained epoch" in line]
    assert done_first and done_first[-1] < 40, log  # stopped part-way through the fit
    record = results.full_size("book/demo/resumable.md", root=book).record
    assert record["complete"] is False and record["slices"] == 1

    second = _session(book, tmp_path / "o2", 60, chapters=chapter, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    log = (tmp_path / "o2" / "logs" / "demo-resumable.log").read_text()
    assert "tiny: continuing from the resume point" in log
    done_second = [int(line.split()[-1]) for line in log.splitlines() if "trained epoch" in line]
    # the epochs of the first session are not trained again (at most the one it was stopped in)
    assert done_second[0] >= done_first[-1] and done_second[-1] == 40, log
    found = results.full_size("book/demo/resumable.md", root=book)
    assert found.stale is None, found.stale
    assert found.record["values"]["epochs_in_history"] == 40
    assert found.record["slices"] == 2  # its wall_s counts both sessions


def test_bad_arguments_are_refused_with_their_names(book, tmp_path):
    with pytest.raises(ValueError, match="budget_s must be a positive number"):
        gpu_session.session(["book/demo/fast.md"], 0, tmp_path, book)
    with pytest.raises(ValueError, match="no such chapter"):
        gpu_session.session(["book/demo/none.md"], 10, tmp_path, book)


def test_every_training_chapter_is_in_the_session_and_exists():
    assert len(set(gpu_session.TRAINING_CHAPTERS)) == len(gpu_session.TRAINING_CHAPTERS)
    for chapter in gpu_session.TRAINING_CHAPTERS:
        assert (ROOT / chapter).is_file(), chapter
    # the TGS chapters come last: inference and ablation reuse the training chapter's run
    assert gpu_session.TRAINING_CHAPTERS[-3:] == [
        "book/tgs/training.md",
        "book/tgs/inference.md",
        "book/tgs/ablation.md",
    ]
