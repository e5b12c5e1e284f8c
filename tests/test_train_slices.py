"""segtutor.train.slices: a chapter's fits continue where a stopped full-size run left them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segtutor import results, runs
from segtutor.train import Callback, ResumePoints, Trainer, fit_cosine, fit_resumable, slices

CHAPTER = "book/demo/page.md"
PAGE = """# Demo

```{code-cell} ipython3
print("the chapter's code")
```
"""


@pytest.fixture
def book(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "book" / "demo").mkdir(parents=True)
    (tmp_path / "book" / "demo" / "page.md").write_text(PAGE)
    monkeypatch.setenv(runs.CACHE_ENV, str(tmp_path / "runs"))
    monkeypatch.delenv("SEGTUTOR_SEED_OFFSET", raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _closed():
    torch.set_num_threads(1)
    yield
    results.stop()


class Stop(Exception):
    """Stands for the time limit that kills a chapter run."""


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if row["epoch"] == self.epoch:
            raise Stop


def make_trainer(callbacks=(), perturb: bool = False) -> Trainer:
    """A small model with dropout on shuffled batches: exact only if the RNG and the shuffling
    order are restored, not only the weights."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = (x[:, 0] > 0.5).float()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.3), nn.Conv2d(8, 1, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    shuffle = torch.Generator().manual_seed(3)
    train = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, generator=shuffle)
    if perturb:  # a new process: another global RNG state than the run it continues
        torch.manual_seed(99)
    return Trainer(
        model,
        nn.BCEWithLogitsLoss(),
        opt,
        train,
        DataLoader(TensorDataset(x, y), batch_size=12),
        num_classes=1,
        device="cpu",
        callbacks=callbacks,
        progress=False,
        verbose=False,
    )


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_without_a_full_size_record_it_is_a_plain_fit_and_writes_nothing(book):
    expected = make_trainer()
    expected.fit(3)
    tr = make_trainer()
    history = fit_resumable(tr, 3, "plain", every_s=0)
    assert without_time(history) == without_time(expected.history)
    assert slices.resume_path("plain") is None
    assert not (book / "runs").exists()
    assert tr.callbacks == []  # the resume-point callback is not left behind


def test_a_stopped_chapter_run_continues_its_fit_and_ends_as_an_uninterrupted_one(book, capsys):
    uninterrupted = make_trainer()
    uninterrupted.fit(5)

    # first slice: stopped during epoch 3 (after the resume point of epoch 2)
    assert results.start(CHAPTER, root=book, force=True)
    first = make_trainer(callbacks=[StopAfter(3)])
    with pytest.raises(Stop):
        fit_resumable(first, 5, "net", every_s=0)
    results.stop(complete=False)
    saved = list((book / "runs" / "chapters" / "demo-page").glob("*/net.pt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=True)["epoch"] == 2

    # second slice: the chapter runs again from the top, in a process with another RNG state
    results.start(CHAPTER, root=book, force=True)
    second = make_trainer(perturb=True)
    history = fit_resumable(second, 5, "net", every_s=0)
    assert "net: continuing from the resume point" in capsys.readouterr().out
    for (key, a), b in zip(
        uninterrupted.module.state_dict().items(), second.module.state_dict().values()
    ):
        assert torch.equal(a, b), f"{key} differs from the uninterrupted fit"
    assert without_time(history) == without_time(uninterrupted.history)
    results.stop(complete=False)

    # third slice: the fit had finished, so it returns at once with its whole history
    results.start(CHAPTER, root=book, force=True)
    third = make_trainer(perturb=True)
    third.train_epoch = lambda epoch: pytest.fail("a finished fit trained again")
    history = fit_resumable(third, 5, "net")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert torch.equal(third.module[0].weight, uninterrupted.module[0].weight)


def test_the_rng_after_a_continued_fit_is_the_uninterrupted_runs(book):
    uninterrupted = make_trainer()
    uninterrupted.fit(3)
    after = torch.rand(5)

    results.start(CHAPTER, root=book, force=True)
    fit_resumable(make_trainer(), 3, "net", every_s=0)
    results.stop(complete=False)
    results.start(CHAPTER, root=book, force=True)
    fit_resumable(make_trainer(perturb=True), 3, "net")  # finished: loads the final state
    assert torch.equal(torch.rand(5), after)


def test_fit_cosine_with_a_name_resumes_and_without_one_does_not(book):
    def run(name, callbacks=(), epochs=4):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        x = torch.rand(16, 1, 8, 8, generator=g)
        y = (x[:, 0] > 0.5).float()
        loader = DataLoader(TensorDataset(x, y), batch_size=4)
        model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 1, 1))
        return fit_cosine(
            model,
            nn.BCEWithLogitsLoss(),
            loader,
            epochs=epochs,
            name=name,
            num_classes=1,
            device="cpu",
            progress=False,
            verbose=False,
            callbacks=list(callbacks),
        )

    results.start(CHAPTER, root=book, force=True)
    run(None)
    assert not (book / "runs").exists()
    reference, _ = run("cosine")
    assert slices.resume_path("cosine").is_file()
    results.stop()
    results.start(CHAPTER, root=book, force=True)
    again, history = run("cosine", callbacks=[StopAfter(1)])  # finished: no epoch runs
    assert len(history) == 4
    assert torch.equal(again.module[0].weight, reference.module[0].weight)


def test_each_fit_of_a_run_needs_its_own_name(book):
    for bad in ("", " ,/", None, 3):
        with pytest.raises(ValueError, match="name must be a str"):
            fit_resumable(make_trainer(), 1, bad)
    results.start(CHAPTER, root=book, force=True)
    assert slices.resume_path("BCE, then Lovász").name == "BCE-then-Lov-sz.pt"
    assert slices.resume_path("../up").name == "up.pt"  # never outside the run's folder
    fit_resumable(make_trainer(), 1, "once")
    with pytest.raises(ValueError, match="'once' is already used by another fit"):
        fit_resumable(make_trainer(), 1, "once")
    with pytest.raises(ValueError, match="as once.pt"):  # another name, the same file
        fit_resumable(make_trainer(), 1, "once ")
    results.stop()
    results.start(CHAPTER, root=book, force=True)  # a new run may use it again
    fit_resumable(make_trainer(), 1, "once")


def test_other_chapter_code_or_seed_offset_trains_from_scratch(book, monkeypatch):
    results.start(CHAPTER, root=book, force=True)
    first = slices.resume_path("net")
    results.stop()
    monkeypatch.setenv("SEGTUTOR_SEED_OFFSET", "1")
    results.start(CHAPTER, root=book, force=True)
    assert slices.resume_path("net") != first
    results.stop()
    monkeypatch.delenv("SEGTUTOR_SEED_OFFSET")
    page = book / CHAPTER
    page.write_text(page.read_text().replace("chapter's code", "chapter's new code"))
    results.start(CHAPTER, root=book, force=True)
    assert slices.resume_path("net") != first
    assert slices.resume_path("net").parent.parent == first.parent.parent  # same chapter folder


def test_resume_points_every_epochs_and_at_the_end(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="every_epochs or every_s"):
        ResumePoints(tmp_path / "r.pt")
    with pytest.raises(ValueError, match="every_epochs"):
        ResumePoints(tmp_path / "r.pt", every_epochs=0)
    saved: list[int] = []
    tr = make_trainer(callbacks=[ResumePoints(tmp_path / "r.pt", every_epochs=2)])
    real = tr.save_checkpoint
    monkeypatch.setattr(tr, "save_checkpoint", lambda p: (saved.append(tr.epoch), real(p))[1])
    tr.fit(5)
    assert saved == [2, 4, 5]
    assert torch.load(tmp_path / "r.pt", weights_only=True)["epoch"] == 5


def test_a_continued_record_adds_the_earlier_slices_time(book):
    results.start(CHAPTER, root=book, force=True)
    path = results.stop(complete=False)
    record = json.loads(path.read_text())
    record["wall_s"] = 100.0  # as a run stopped after 100 s leaves it
    path.write_text(json.dumps(record))
    results.start(CHAPTER, root=book, force=True)
    path = results.stop(complete=False)
    record = json.loads(path.read_text())
    assert record["slices"] == 2 and record["wall_s"] >= 100.0
    # a complete record is replaced, not continued
    results.start(CHAPTER, root=book, force=True)
    results.stop(complete=True)
    results.start(CHAPTER, root=book, force=True)
    record = json.loads(results.stop().read_text())
    assert record["slices"] == 1 and record["wall_s"] < 100.0
    # a record of other package code is not continued either
    record.update(complete=False, wall_s=100.0, package_code="0" * 16)
    path.write_text(json.dumps(record))
    results.start(CHAPTER, root=book, force=True)
    record = json.loads(results.stop().read_text())
    assert record["slices"] == 1 and record["wall_s"] < 100.0


def test_the_commit_of_a_tree_without_git_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv(results.COMMIT_ENV, raising=False)
    assert results._commit(tmp_path) == "unknown"
    monkeypatch.setenv(results.COMMIT_ENV, "0123456789ab")
    assert results._commit(tmp_path) == "0123456789ab"
