"""Training in slices: fits that continue where a stopped run left them.

A chapter's full-size run (``scripts/build_book.py --full --chapter ...``, or
``scripts/gpu_session.py`` on a lent GPU) may be stopped by a time limit before its end. Run
again, it executes the chapter from the top; a fit started with :func:`fit_resumable` then does
not train again what the stopped run trained: it continues from the last resume point that run
wrote (the trainer's whole state: weights, optimizer, schedule, RNG, shuffling order, history),
and a fit that had finished returns at once with its final state. Because the state is whole, the
continued fit ends exactly as an uninterrupted one would, and so does the rest of the chapter.

The resume points live in ``<runs root>/chapters/<chapter>/<key>/<name>.pt``: ``<key>`` is a
hash of the chapter's code cells, of the package's sources and of the seed offset, so that a
changed chapter or package trains from scratch. Outside a recorded full-size run (quick mode,
a notebook, the CPU-built book) :func:`fit_resumable` is plain ``trainer.fit(epochs)`` and
writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from .. import checks, config, results, runs
from .bookkeeping import Callback
from .trainer import Trainer

__all__ = ["RESUME_EVERY_S", "ResumePoints", "fit_resumable", "resume_path"]

# A resume point at most every this many seconds of training: a run stopped by a time limit
# loses at most this much, and a full-width checkpoint (weights and Adam's two moments, a few
# hundred MB for a ResNet-50 backbone) is written about once a minute, not after every epoch.
RESUME_EVERY_S = 60.0

# what a name keeps in its file name; the rest (spaces, commas, accents) becomes "-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+]+")


class ResumePoints(Callback):
    """Save the trainer's whole state to ``path`` (atomically) every ``every_epochs`` epochs
    and/or when ``every_s`` seconds have passed since the last save, and at the end of the fit
    (after every epoch-end callback before it, e.g. the snapshot of a cycle that ends there).

    ``Trainer.fit(epochs, resume=path)`` continues from the file; from the state of a finished
    fit it returns at once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        every_epochs: int | None = None,
        every_s: float | None = None,
    ) -> None:
        if every_epochs is None and every_s is None:
            raise ValueError("ResumePoints needs every_epochs or every_s (or both)")
        self.path = Path(path)
        self.every_epochs = (
            None if every_epochs is None else checks.positive_int("every_epochs", every_epochs)
        )
        self.every_s = None if every_s is None else checks.number("every_s", every_s, minimum=0.0)
        self._last_save = time.monotonic()

    def on_fit_start(self, trainer: Trainer) -> None:
        self._last_save = time.monotonic()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        due_epoch = self.every_epochs is not None and int(row["epoch"]) % self.every_epochs == 0
        due_time = self.every_s is not None and time.monotonic() - self._last_save >= self.every_s
        if due_epoch or due_time:
            self._save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()


# names used by fits of the record now open: a second fit under the same name would load the
# first one's finished state instead of training
_used: tuple[str, set[str]] | None = None


def _slice_key(record: dict) -> str:
    text = json.dumps(
        {
            "chapter": record["chapter"],
            "chapter_code": record["recipe"]["chapter_code"],
            "package": runs.source_fingerprint(),
            "seed_offset": config.seed_offset(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_path(name: str, root: str | Path | None = None) -> Path | None:
    """Where the fit ``name`` of the chapter whose full-size run is being recorded keeps its
    resume point: ``<root>/chapters/<chapter>/<key>/<name>.pt`` (``root`` defaults to
    :func:`segtutor.runs.default_root`); None when no full-size record is open."""
    stem = _file_stem(name)
    record = results.current()
    if record is None:
        return None
    chapter = results.record_path(record["chapter"]).stem
    base = Path(root) if root is not None else runs.default_root()
    return base / "chapters" / chapter / _slice_key(record) / f"{stem}.pt"


def _file_stem(name: object) -> str:
    """``"BCE, then Lovász"`` -> ``"BCE-then-Lov-sz"``: the name of a fit as a file name."""
    stem = _UNSAFE.sub("-", name).strip("-.") if isinstance(name, str) else ""
    if not stem:
        raise ValueError(
            f"name must be a str with at least one letter or digit (one name per fit of the "
            f"chapter), got {name!r}"
        )
    return stem


def fit_resumable(
    trainer: Trainer,
    epochs: int,
    name: str,
    *,
    every_s: float = RESUME_EVERY_S,
    root: str | Path | None = None,
) -> list[dict[str, float]]:
    """``trainer.fit(epochs)`` that a stopped full-size run of the chapter continues.

    With a full-size record open (:func:`segtutor.results.start`, as
    ``scripts/run_chapter_script.py --full`` opens it) the fit writes a resume point to
    :func:`resume_path` every ``every_s`` seconds and at its end, and starts from the one an
    earlier, stopped run of the same chapter code left (printing so). ``name`` tells the fits of
    one chapter apart: each fit of a run needs its own (a ValueError otherwise). Without a
    record this is ``trainer.fit(epochs)``.

    Epochs a continued fit does not train again are not replayed to the trainer's logger or
    callbacks; its history holds them all. Returns the history, one dict per epoch.
    """
    global _used
    checks.positive_int("epochs", epochs)
    path = resume_path(name, root)
    if path is None:
        return trainer.fit(epochs)
    record = results.current() or {}
    token = results.current_id() or ""
    if _used is None or _used[0] != token:
        _used = (token, set())
    if path.stem in _used[1]:
        raise ValueError(
            f"name {name!r} is already used by another fit of {record.get('chapter')} (as "
            f"{path.name}); give each fit of the chapter its own name"
        )
    _used[1].add(path.stem)
    start = path if path.is_file() else None
    if start is not None:
        print(f"{name}: continuing from the resume point {runs.shown(path)}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    points = ResumePoints(path, every_s=every_s)
    trainer.callbacks.append(points)
    try:
        return trainer.fit(epochs, resume=start)
    finally:
        trainer.callbacks.remove(points)
