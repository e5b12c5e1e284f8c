"""Where the book keeps trained runs, and how a run is recognised by what made it.

Two kinds of runs outlive the process that trained them: the TGS pipeline that three chapters
share (:func:`segtutor.tgs.cached_run`) and the resume points of a chapter's fits during a
full-size run in slices (:func:`segtutor.train.fit_resumable`). Both live under
:func:`default_root` and both are keyed by the code that trained them (:func:`source_fingerprint`),
so that an edit of that code trains again rather than serving what the current code would not
produce.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "default_root", "hash_files", "shown", "source_fingerprint"]

# the folder of the checkout that holds the segtutor package (runs/ there is git-ignored)
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
CACHE_ENV = "SEGTUTOR_RUN_CACHE"


def default_root() -> Path:
    """Where trained runs are kept: ``$SEGTUTOR_RUN_CACHE`` if set, otherwise ``runs/book`` in
    the checkout that holds the package (the same folder whatever the working directory of the
    chapter), or ``runs/book`` under the working directory for an installed package."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env)
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "segtutor").is_dir():
        return _CHECKOUT / "runs" / "book"
    return Path("runs") / "book"


def hash_files(h: Any, folder: Path, files: Iterable[Path]) -> None:
    """Feed ``h`` (a ``hashlib`` object) each file's path relative to ``folder`` and its bytes,
    length-prefixed so that no two different sets of files feed the same stream."""
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        data = path.read_bytes()
        h.update(len(data).to_bytes(8, "little") + data)


def source_fingerprint(parts: Iterable[str] | None = None) -> str:
    """SHA-256 (hex) of the ``.py`` sources of the package's ``parts`` (sub-packages or module
    files, e.g. ``("train", "losses.py")``); ``None`` = the whole package."""
    files: list[Path] = []
    for part in parts if parts is not None else ("",):
        path = _PACKAGE / part
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"parts: {part!r} is not a module or sub-package of segtutor")
    h = hashlib.sha256()
    hash_files(h, _PACKAGE, files)
    return h.hexdigest()


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the checkout (``runs/book/...``) when inside it, for messages."""
    try:
        return Path(path).resolve().relative_to(_CHECKOUT).as_posix()
    except ValueError:
        return str(path)
