"""Claims: the comparisons a chapter's prose makes, recorded where they are measured.

A chapter never types a number or a verdict into its prose. It measures, then calls
:func:`claim` with the sentence, whether it holds, and the values it rests on::

    claim("FCN-8s beats FCN-32s", fcn8s > fcn32s + margin, fcn8s_miou=fcn8s, fcn32s_miou=fcn32s)

which

- glues every value under its name (myst-nb ``glue``), so the prose quotes it with
  ``{glue:text}`fcn8s_miou:.3f```;
- shows one line in the page, ``claim holds: ...`` or ``claim does NOT hold: ...``, with the values;
- attaches the claim to the cell's output as a JSON record (MIME type :data:`CLAIM_MIME`).

When the book is built, ``scripts/build_book.py`` reads those records back from every executed
chapter (:func:`collect`) into ``_build/claims.json``, and ``tests/test_book.py`` fails on any
claim that does not hold, naming the chapter and its values. The records live in the executed
notebooks, so a chapter served from the execution cache keeps its claims.
"""

from __future__ import annotations

import json
import math
import numbers
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import results

if TYPE_CHECKING:  # only for hints: a machine without Jupyter can still record claims
    import nbformat

CLAIM_MIME = "application/vnd.segtutor.claim+json"

__all__ = ["CLAIM_MIME", "claim", "claims_in_notebook", "collect", "failing"]


def _number(name: str, value: Any) -> float:
    """A claim's value as a plain float (tensors and NumPy scalars included)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"claim value {name!r} must be a real number, got {type(value).__name__}")
    return float(value)


def _show(bundle: dict[str, Any]) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python without IPython: the text line is enough
        print(bundle["text/plain"])
        return
    display(bundle, raw=True)


def _glue(name: str, value: float) -> None:
    results.record_value(name, value)  # the full-size record, when one is open
    try:
        from myst_nb import glue
    except ImportError:  # outside the book build (a plain script) there is nothing to glue into
        return
    glue(name, value, display=False)


def claim(sentence: str, holds: bool, **values: Any) -> bool:
    """Record that the chapter's prose states ``sentence``, which ``holds`` (or not) on ``values``.

    ``values`` (name -> real number) are the measurements the claim rests on; each is glued under
    its name. For a comparison, give first the value that must come out larger and second the one
    it must beat (a baseline, a rival, a required size): ``benchmarks/calibrate_chapters.py`` reads
    their difference as the claim's margin. Returns ``holds`` as a ``bool``, so the prose that
    follows can depend on it.
    A value that is NaN makes the claim not hold, whatever ``holds`` says.
    """
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError("claim: sentence must be a non-empty string")
    if not values:
        raise ValueError(f"claim {sentence!r}: give the values it rests on (name=value)")
    numbers_ = {name: _number(name, value) for name, value in values.items()}
    ok = bool(holds) and not any(math.isnan(v) for v in numbers_.values())
    for name, value in numbers_.items():
        _glue(name, value)
    shown = ", ".join(f"{name} = {value:.4g}" for name, value in numbers_.items())
    verdict = "claim holds" if ok else "claim does NOT hold"
    record = {"claim": sentence, "values": numbers_, "holds": ok}
    # wrapped at the width of the book's code cells, so the page needs no horizontal scrolling
    line = textwrap.fill(f"{verdict}: {sentence} ({shown})", width=88, subsequent_indent="  ")
    _show({CLAIM_MIME: record, "text/plain": line})
    return ok


def claims_in_notebook(nb: nbformat.NotebookNode, chapter: str) -> list[dict[str, Any]]:
    """Every claim record in an executed notebook's outputs, with its ``chapter`` added."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            record = output.get("data", {}).get(CLAIM_MIME)
            if record is not None:
                if isinstance(record, str):  # some writers store JSON bundles as text
                    record = json.loads(record)
                found.append({"chapter": chapter, **record})
    return found


def collect(
    notebooks: Iterable[tuple[str, nbformat.NotebookNode]], out: str | Path | None = None
) -> list[dict[str, Any]]:
    """Gather the claims of ``(chapter path, executed notebook)`` pairs; write them as JSON to
    ``out`` if given. Each claim: ``{"chapter", "claim", "values", "holds"}``."""
    claims: list[dict[str, Any]] = []
    for chapter, nb in notebooks:
        claims += claims_in_notebook(nb, chapter)
    if out is not None:
        Path(out).write_text(json.dumps(claims, indent=1) + "\n")
    return claims


def failing(claims: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per claim that does not hold: chapter, sentence and values."""
    return [f"{c['chapter']}: {c['claim']} ({c['values']})" for c in claims if not c["holds"]]
