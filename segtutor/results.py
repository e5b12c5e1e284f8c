"""Full-size results: what a chapter measured in full mode, kept for the CPU-built book.

The book built on a CPU runs every chapter in quick mode. What the same code gives at full size
(on a GPU) is recorded once, when the chapter runs in full mode, in
``book/results/full/<chapter>.json`` (``<chapter>`` is the path under ``book/`` without ``.md``,
``/`` replaced by ``-``: ``tgs-training.json``), and the quick page shows it beside its own
result. The file is only ever written by executing the chapter in full mode
(``python scripts/build_book.py --full --chapter book/tgs/training.md``), never by hand.

Writer side: :func:`start` opens the record of a chapter (a no-op in quick mode);
:func:`record_value` and :func:`record_curve` add to it, and the file is rewritten atomically
after each, so a run stopped half-way leaves a valid record of what it measured, marked
incomplete until :func:`stop` says the chapter reached its end.
:func:`glue` is a drop-in for ``myst_nb.glue`` that also records numbers, and
:func:`segtutor.claims.claim` records its values the same way.

Reader side: :func:`full_size` reads a record and says whether it is stale: it stores a hash of
the chapter's code cells and the recipe the chapter declared (the ``recipe`` given to
:func:`show`: the full-mode settings that live outside the chapter, e.g. the TGS recipe's
defaults in ``segtutor.tgs.options``), and either changing makes the record describe another
experiment; so does a run that never reached the chapter's end.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import numbers
import os
import re
import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checks, config, runs
from .fileio import atomic_write_text

__all__ = [
    "FullSize",
    "chapter_code_hash",
    "code_cells",
    "current",
    "current_id",
    "full_size",
    "glue",
    "plot_curves",
    "record_curve",
    "record_path",
    "record_value",
    "show",
    "start",
    "stop",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORD_DIR = Path("book") / "results" / "full"
_CHAPTER_RE = re.compile(r"^book/[A-Za-z0-9_/-]+\.md$")


def _check_chapter(chapter: str) -> str:
    if not isinstance(chapter, str):
        raise TypeError(f"chapter must be a path like 'book/tgs/training.md', got {chapter!r}")
    chapter = chapter.replace(os.sep, "/")
    if not _CHAPTER_RE.match(chapter):
        raise ValueError(
            f"chapter must be a path under book/ ending in .md (e.g. 'book/tgs/training.md'), "
            f"got {chapter!r}"
        )
    return chapter


def record_path(chapter: str, root: str | os.PathLike | None = None) -> Path:
    """``book/tgs/training.md`` -> ``<root>/book/results/full/tgs-training.json``."""
    chapter = _check_chapter(chapter)
    stem = chapter[len("book/") : -len(".md")].replace("/", "-")
    return Path(root if root is not None else REPO_ROOT) / RECORD_DIR / f"{stem}.json"


def code_cells(text: str) -> list[str]:
    """The sources of the ``{code-cell}`` blocks of a MyST notebook, without their options."""
    cells, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith("```{code-cell}"):
            i += 1
            continue
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if body and body[0] == "---":  # a YAML options block
            end = body.index("---", 1) if "---" in body[1:] else 0
            body = body[end + 1 :]
        while body and body[0].startswith(":") and ":" in body[0][1:]:  # `:tags: [...]` lines
            body.pop(0)
        cells.append("\n".join(body))
    return cells


def chapter_code_hash(chapter: str, root: str | os.PathLike | None = None) -> str:
    """First 16 hex digits of the SHA-256 of the chapter's code cells (prose does not count)."""
    path = Path(root if root is not None else REPO_ROOT) / _check_chapter(chapter)
    if not path.is_file():
        raise FileNotFoundError(f"no chapter at {path}")
    code = "\n\x00\n".join(code_cells(path.read_text(encoding="utf-8")))
    return hashlib.sha256(code.encode()).hexdigest()[:16]


COMMIT_ENV = "SEGTUTOR_COMMIT"


def _commit(root: Path) -> str:
    """The checkout's commit (12 hex digits, ``-dirty`` with uncommitted changes); where git
    cannot tell (a copy of the tree without ``.git``, as on a lent GPU machine),
    ``$SEGTUTOR_COMMIT``, else ``"unknown"``."""
    fallback = os.environ.get(COMMIT_ENV, "").strip() or "unknown"
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    if out.returncode != 0:
        return fallback
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _jsonable(value: Any) -> Any:
    """Recipes hold numbers, strings, bools, lists and dicts; anything else by its ``repr``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(value))
    return repr(value)


def _as_number(name: str, value: Any) -> float | None:
    """A recordable number, or None for what is not one (text, figures, tables)."""
    if callable(getattr(value, "numel", None)):  # a tensor: only a single element is a number
        if value.numel() != 1:
            return None
        value = value.item()
    elif callable(getattr(value, "item", None)) and getattr(value, "size", None) == 1:
        value = value.item()  # a NumPy scalar or one-element array
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _as_mapping(recipe: Any) -> Mapping[str, Any]:
    """A recipe as a mapping: a dict as it is, a dataclass (``TrainOptions``) by its fields."""
    if hasattr(recipe, "__dataclass_fields__") and not isinstance(recipe, type):
        from dataclasses import asdict

        return asdict(recipe)
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a mapping or a dataclass, got {type(recipe).__name__}")
    return recipe


class _Record:
    """The open record of one chapter's full-mode run; rewritten after every change."""

    def __init__(self, chapter: str, recipe: Mapping[str, Any] | None, root: Path) -> None:
        self.path = record_path(chapter, root)
        self.id = secrets.token_hex(8)  # tells two runs of one chapter in a process apart
        self.t0 = time.perf_counter()
        code = chapter_code_hash(chapter, root)
        package = runs.source_fingerprint()[:16]
        # a run that continues a stopped one (fits resume: segtutor.train.fit_resumable) adds
        # its time to the earlier slices', so wall_s stays the chapter's execution time
        self.earlier_s, slices = _earlier_slices(self.path, code, package)
        self.data: dict[str, Any] = {
            "chapter": chapter,
            "device": config.device_name(),
            "torch": _torch_version(),
            "commit": _commit(root),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": 0.0,
            "slices": slices,
            # the package's sources: a run of other code cannot continue this one's fits
            "package_code": package,
            "recipe": {
                "chapter_code": code,
                **(_jsonable(_as_mapping(recipe)) if recipe else {}),
            },
            "values": {},
            "curves": {},
            # True only once the chapter ran to its end (stop(complete=True)): a run killed by
            # a time limit or stopped by a failing cell leaves a record that says so
            "complete": False,
        }
        self.write()

    def write(self) -> None:
        self.data["wall_s"] = round(self.earlier_s + time.perf_counter() - self.t0, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=False) + "\n")


def _earlier_slices(path: Path, chapter_code: str, package_code: str) -> tuple[float, int]:
    """(seconds, slices) of the earlier runs a new run of the chapter continues: those of the
    record at ``path`` when it is incomplete and from the same chapter and package code (a run
    of other code trains from scratch), else (0.0, 1)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = (
            old.get("complete") is False
            and old.get("package_code") == package_code
            and old.get("recipe", {}).get("chapter_code") == chapter_code
        )
        if same:
            return float(old["wall_s"]), int(old.get("slices", 1)) + 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return 0.0, 1


def _torch_version() -> str:
    import torch

    return torch.__version__


_active: _Record | None = None


def start(
    chapter: str,
    recipe: Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike | None = None,
    force: bool = False,
) -> bool:
    """Open the full-size record of ``chapter`` (``"book/tgs/training.md"``) in full mode.

    ``recipe``: the settings of the full-mode experiment (epochs, images, widths...), stored
    beside a hash of the chapter's code cells; a reader whose recipe differs calls the record
    stale. In quick mode nothing is recorded (returns False) unless ``force`` (tests).
    Starting again replaces the chapter's earlier record; when that record is incomplete and
    from the same chapter and package code (a run stopped by a time limit, whose fits the new
    run continues: :func:`segtutor.train.fit_resumable`), its ``wall_s`` carries over and
    ``slices`` counts the runs.
    """
    global _active
    if config.is_quick() and not force:
        _active = None
        return False
    _active = _Record(_check_chapter(chapter), recipe, Path(root) if root else REPO_ROOT)
    return True


def current() -> dict[str, Any] | None:
    """The open record as a dict (a copy), or None when nothing is being recorded."""
    return None if _active is None else json.loads(json.dumps(_active.data))


def current_id() -> str | None:
    """An identifier of the open record, new with each :func:`start`; None when none is open."""
    return None if _active is None else _active.id


def stop(complete: bool = True) -> Path | None:
    """Write the open record a last time (its ``wall_s`` final) and close it; its path.

    ``complete=False`` (the chapter stopped at a failing cell) keeps the record marked
    incomplete, so the quick page does not show it as the chapter's full-size result.
    """
    global _active
    if _active is None:
        return None
    checks.boolean("complete", complete)
    _active.data["complete"] = complete
    _active.write()
    path, _active = _active.path, None
    return path


def record_value(name: str, value: Any) -> None:
    """Add ``name -> value`` to the open record if ``value`` is a finite real number (a
    0-d tensor or NumPy scalar counts); anything else, and everything in quick mode, is ignored."""
    if _active is None:
        return
    number = _as_number(name, value)
    if number is None:
        return
    _active.data["values"][str(name)] = number
    _active.write()


def record_curve(name: str, values: Sequence[Any]) -> None:
    """Add a curve (one number per epoch or step) to the open record; NaN becomes null."""
    if _active is None:
        return
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"record_curve: values must be a sequence of numbers, got {values!r}")
    _active.data["curves"][str(name)] = [_as_number(name, v) for v in values]
    _active.write()


def glue(name: str, variable: Any, display: bool = True) -> None:
    """``myst_nb.glue`` that also records ``variable`` when it is a number and a full-size
    record is open; outside a book build (no myst-nb) only the recording happens."""
    record_value(name, variable)
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, variable, display=display)


# ------------------------------------------------------------------------------------------
# Reader side
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullSize:
    """What the quick page can say about the chapter's full-size run.

    ``record`` is the JSON record or None; ``stale`` the reason it no longer describes the
    chapter (None when current); ``message`` one line for the page.
    """

    chapter: str
    record: dict[str, Any] | None
    stale: str | None
    message: str

    def table(self, names: Sequence[str] | None = None) -> Any:
        """The recorded values as a pandas DataFrame (``value`` column, indexed by name)."""
        import pandas as pd

        values = {} if self.record is None else self.record["values"]
        if names is not None:
            values = {n: values[n] for n in names if n in values}
        return pd.DataFrame({"value": pd.Series(values, dtype=float)})


def full_size(
    chapter: str,
    recipe: Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> FullSize:
    """Read the full-size record of ``chapter``; stale when its code or ``recipe`` changed."""
    chapter = _check_chapter(chapter)
    root_path = Path(root) if root else REPO_ROOT
    path = record_path(chapter, root_path)
    command = f"python scripts/build_book.py --full --chapter {chapter}"
    if not path.is_file():
        return FullSize(
            chapter,
            None,
            None,
            f"No full-size run recorded yet: run `{command}` on a GPU.",
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    want = {"chapter_code": chapter_code_hash(chapter, root_path)}
    if recipe:
        want.update(_jsonable(_as_mapping(recipe)))
    had = record.get("recipe", {})
    changed = sorted(k for k in want if had.get(k) != want[k])
    reasons = []
    if record.get("complete") is not True:
        reasons.append(
            f"the full-mode run stopped after {record.get('wall_s', 0):.0f} s, before the "
            "chapter's end"
        )
    if changed:
        what = ", ".join(
            "the chapter's code" if k == "chapter_code" else f"{k} {had.get(k)!r} -> {want[k]!r}"
            for k in changed
        )
        reasons.append(f"recorded with another recipe ({what})")
    stale = f"{'; '.join(reasons)}; run `{command}` again" if reasons else None
    head = (
        f"At full size: {record['device']}, torch {record['torch']}, {record['date']}, "
        f"commit {record['commit']}, {record['wall_s']:.0f} s."
    )
    return FullSize(chapter, record, stale, head + (f" Stale: {stale}." if stale else ""))


def plot_curves(found: FullSize, names: Sequence[str] | None = None, ax: Any = None) -> Any:
    """Plot recorded curves (all, or ``names``) against their index; the axes, or None when the
    record has no curves."""
    curves = {} if found.record is None else found.record.get("curves", {})
    if names is not None:
        curves = {n: curves[n] for n in names if n in curves}
    if not curves:
        return None
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    for name, ys in curves.items():
        xs = [i + 1 for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], label=name)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    ax.set_title(f"full size, {found.record['device']}", fontsize=9)
    return ax


def show(
    chapter: str,
    recipe: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> FullSize:
    """For the end of a quick page: the line of :func:`full_size`, its table of values (all, or
    ``names``) and its curves, when a record exists. Returns what :func:`full_size` found.

    ``recipe``: the chapter's full-mode settings (a mapping or a dataclass). During the full
    run that writes the record they are stored in it; on a quick page a record made with other
    settings is called stale.
    """
    if _active is not None and _active.data["chapter"] == _check_chapter(chapter):
        # this run is the full-size run: what it would show is what it is writing
        if recipe:
            _active.data["recipe"].update(_jsonable(_as_mapping(recipe)))
            _active.write()
        found = FullSize(
            chapter, current(), None, f"This run writes the full-size record: {_active.path}."
        )
    else:
        found = full_size(chapter, recipe)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # plain Python
        print(found.message)
        if found.record is not None:
            print(found.table(names).to_string())
        return found
    display(Markdown(found.message))
    if found.record is not None:
        display(found.table(names).style.format("{:.4g}"))
        if plot_curves(found) is not None:
            import matplotlib.pyplot as plt

            plt.show()
    return found
