"""segtutor.results: the full-size record of a chapter, its writer, its reader and the script
runner that writes it on a machine without Jupyter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segtutor import claims, results

ROOT = Path(__file__).resolve().parents[1]

CHAPTER = """# Demo

Prose that does not count for the record's freshness.

```{code-cell} ipython3
from myst_nb import glue
from segtutor import config
from segtutor.claims import claim

epochs = config.pick(2, 5)
glue("demo_epochs", epochs, display=False)
glue("demo_text", "not a number", display=False)
from IPython.display import Markdown, display

display(Markdown("shown as text"))
```

```{code-cell} ipython3
---
tags: [hide-input]
---
import matplotlib.pyplot as plt
from segtutor import results

results.record_curve("demo_loss", [1.0, 0.5, float("nan")])
claim("five beats two", epochs > 2, demo_big=epochs, demo_small=2)
plt.plot([1, 2])
plt.show()
```
"""


BLOCK_JUPYTER = """
import importlib.abc, sys

BLOCKED = {"IPython", "nbformat", "myst_nb", "jupytext", "ipykernel", "jupyter_book", "visdom",
           "tensorboardX", "ipywidgets"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this machine")
        return None

sys.meta_path.insert(0, Block())
"""


@pytest.fixture
def book(tmp_path: Path) -> Path:
    (tmp_path / "book" / "demo").mkdir(parents=True)
    (tmp_path / "book" / "demo" / "page.md").write_text(CHAPTER)
    return tmp_path


@pytest.fixture(autouse=True)
def _closed():
    yield
    results.stop()


def test_record_path_names_the_chapter_and_rejects_other_paths(tmp_path):
    assert results.record_path("book/tgs/training.md", tmp_path) == (
        tmp_path / "book" / "results" / "full" / "tgs-training.json"
    )
    for bad in ("tgs/training.md", "book/tgs/training.ipynb", "book/../x.md"):
        with pytest.raises(ValueError, match="chapter must be a path under book/"):
            results.record_path(bad)
    with pytest.raises(TypeError, match="chapter"):
        results.record_path(Path("book/x.md"))  # type: ignore[arg-type]


def test_code_cells_drop_options_and_keep_code():
    cells = results.code_cells(CHAPTER)
    assert len(cells) == 2
    assert cells[0].startswith("from myst_nb import glue")
    assert cells[1].startswith("import matplotlib.pyplot")  # the --- options block is gone


def test_nothing_is_recorded_in_quick_mode(book, monkeypatch):
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    assert results.start("book/demo/page.md", root=book) is False
    results.record_value("x", 1.0)
    assert results.current() is None
    assert not (book / "book" / "results").exists()


def test_writer_records_numbers_as_they_arrive(book, monkeypatch):
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    assert results.start("book/demo/page.md", {"epochs": 5, "lr": 1e-3}, root=book)
    path = results.record_path("book/demo/page.md", book)
    first = json.loads(path.read_text())  # valid from the start, before any value
    assert set(first) == {
        "chapter",
        "device",
        "torch",
        "commit",
        "date",
        "wall_s",
        "slices",
        "package_code",
        "recipe",
        "values",
        "curves",
        "complete",
    }
    assert first["complete"] is False  # until the chapter reaches its end
    assert first["recipe"]["epochs"] == 5 and "chapter_code" in first["recipe"]
    assert first["torch"] == torch.__version__
    results.record_value("a", torch.tensor(0.25))
    results.record_value("b", np.float32(0.5))
    results.record_value("text", "skipped")
    results.record_value("tensor", torch.ones(3))  # not one number: skipped
    results.record_value("nan", float("nan"))
    claims.claim("a is positive", True, c=3)  # claims feed the record too
    on_disk = json.loads(path.read_text())
    assert on_disk["values"] == {"a": 0.25, "b": 0.5, "c": 3.0}
    results.record_curve("loss", [1, 0.5, float("nan")])
    with pytest.raises(TypeError, match="sequence of numbers"):
        results.record_curve("bad", "123")
    assert results.stop() == path
    last = json.loads(path.read_text())
    assert last["curves"] == {"loss": [1.0, 0.5, None]} and last["complete"] is True


def test_reader_says_missing_current_and_stale(book, monkeypatch):
    chapter = "book/demo/page.md"
    missing = results.full_size(chapter, root=book)
    assert missing.record is None and missing.stale is None
    assert f"scripts/build_book.py --full --chapter {chapter}" in missing.message
    assert missing.table().empty

    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    results.start(chapter, {"epochs": 5}, root=book)
    results.record_value("score", 0.75)
    results.stop()
    found = results.full_size(chapter, {"epochs": 5}, root=book)
    assert found.stale is None and found.message.startswith("At full size:")
    assert found.table().loc["score", "value"] == 0.75

    assert "epochs 5 -> 6" in results.full_size(chapter, {"epochs": 6}, root=book).stale
    page = book / chapter
    page.write_text(page.read_text().replace("Prose that", "Other prose that"))
    assert results.full_size(chapter, {"epochs": 5}, root=book).stale is None
    page.write_text(page.read_text().replace("config.pick(2, 5)", "config.pick(2, 6)"))
    assert "the chapter's code" in results.full_size(chapter, {"epochs": 5}, root=book).stale


def test_script_runner_executes_a_chapter_and_writes_its_record(book, tmp_path):
    figures = tmp_path / "figures"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "run_chapter_script.py"),
        "book/demo/page.md",
        "--full",
        "--root",
        str(book),
        "--figures",
        str(figures),
    ]
    # the GPU machine has PyTorch but none of Jupyter's packages: block them all
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_JUPYTER)
    env = {
        "PATH": "/usr/bin:/bin",
        "SEGTUTOR_DEVICE": "cpu",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(site),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "claim holds: five beats two" in proc.stdout
    assert "shown as text" in proc.stdout
    record = json.loads(results.record_path("book/demo/page.md", book).read_text())
    assert record["values"] == {"demo_epochs": 5.0, "demo_big": 5.0, "demo_small": 2.0}
    assert record["curves"] == {"demo_loss": [1.0, 0.5, None]}
    assert record["device"].startswith("cpu")
    assert sorted(p.name for p in figures.iterdir()) == ["figure_01.png"]
    assert results.full_size("book/demo/page.md", root=book).stale is None


@pytest.mark.parametrize("mode", ["--quick", "--full"])
def test_script_runner_names_the_failing_cell(book, mode):
    page = book / "book" / "demo" / "page.md"
    page.write_text(page.read_text().replace("plt.plot([1, 2])", "1 / 0"))
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "run_chapter_script.py"),
        "book/demo/page.md",
        mode,
        "--root",
        str(book),
    ]
    env = {"PATH": "/usr/bin:/bin", "SEGTUTOR_DEVICE": "cpu", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "book/demo/page.md: cell 2 of 2 failed" in proc.stderr
    assert "ZeroDivisionError" in proc.stderr
    if mode == "--quick":
        assert not (book / "book" / "results").exists()  # quick mode writes no record
        return
    # full mode: the record keeps what the first cell measured, marked incomplete
    record = json.loads(results.record_path("book/demo/page.md", book).read_text())
    assert record["complete"] is False and record["values"]["demo_epochs"] == 5.0
    assert "before the chapter's end" in results.full_size("book/demo/page.md", root=book).stale


def test_build_book_full_chapter_runs_the_script_runner(monkeypatch, tmp_path):
    from scripts import build_book

    calls = []
    monkeypatch.setattr(build_book.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    monkeypatch.setattr(
        sys,
        "argv",
        ["build_book.py", "--full", "--chapter", "book/tgs/training.md", "--figures", "/x"],
    )
    with pytest.raises(SystemExit) as done:
        build_book.main()
    assert done.value.code == 0
    (cmd,) = calls
    assert cmd[1].endswith("scripts/run_chapter_script.py")
    assert cmd[2:] == ["book/tgs/training.md", "--full", "--figures", "/x"]


def test_show_prints_the_line_and_the_table(book, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ipython(name, *args, **kwargs):
        if name.startswith("IPython"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(results, "REPO_ROOT", book)
    monkeypatch.setattr(builtins, "__import__", no_ipython)
    results.show("book/demo/page.md")
    assert "No full-size run recorded yet" in capsys.readouterr().out
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    results.start("book/demo/page.md")
    results.record_value("score", 0.5)
    results.stop()
    found = results.show("book/demo/page.md", names=["score"])
    out = capsys.readouterr().out
    assert found.record is not None and "At full size:" in out and "0.5" in out


def test_show_during_the_full_run_points_at_the_record_being_written(book, monkeypatch, capsys):
    monkeypatch.setattr(results, "REPO_ROOT", book)
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    results.start("book/demo/page.md")
    results.record_value("score", 0.5)
    found = results.show("book/demo/page.md")
    assert found.message.startswith("This run writes the full-size record")
    assert found.record["values"] == {"score": 0.5}


def test_a_run_that_stopped_early_is_not_shown_as_the_full_size_result(book, monkeypatch):
    chapter = "book/demo/page.md"
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    results.start(chapter, root=book)
    results.record_value("score", 0.5)
    # the process was killed here (a time limit): the record on disk is never completed
    results._active = None
    found = results.full_size(chapter, root=book)
    assert found.record["values"] == {"score": 0.5}
    assert "stopped after" in found.stale and "before the chapter's end" in found.stale
    assert "Stale:" in found.message
    results.start(chapter, root=book)
    results.stop(complete=False)  # a failing cell
    assert "before the chapter's end" in results.full_size(chapter, root=book).stale
    results.start(chapter, root=book)
    with pytest.raises(TypeError, match="complete must be a bool"):
        results.stop(complete="yes")
    assert results.stop() is not None
    assert results.full_size(chapter, root=book).stale is None


def test_the_recipe_given_to_show_is_recorded_and_checked(book, monkeypatch, capsys):
    from segtutor.tgs import TrainOptions

    chapter = "book/demo/page.md"
    monkeypatch.setattr(results, "REPO_ROOT", book)
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    full = TrainOptions(seed=0).resolved()
    results.start(chapter)
    results.show(chapter, recipe=full)  # the full run stores the settings it ran with
    results.stop()
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    assert results.full_size(chapter, TrainOptions(seed=0).resolved(quick=False)).stale is None
    longer = TrainOptions(seed=0, stage1_epochs=31).resolved(quick=False)
    stale = results.full_size(chapter, longer).stale
    assert "stage1_epochs 30 -> 31" in stale
    with pytest.raises(TypeError, match="recipe must be a mapping or a dataclass"):
        results.full_size(chapter, [("epochs", 1)])
