"""The chapters' code cells read without horizontal scrolling (issue 19).

The built book shows a code cell in a box about 88 characters wide; a longer line scrolls
sideways. The cells are formatted by ruff at 88 columns, which does not wrap comments,
docstrings and string literals, so this test checks every line of every code cell.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_COLUMNS = 88


def toc_chapters(node: object) -> list[str]:
    """Every ``root``/``file`` entry of a parsed _toc.yml, as ``book/.../name.md``, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        found += [f"{node[key]}.md" for key in ("root", "file") if key in node]
        for value in node.values():
            found += toc_chapters(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_chapters(item)
    return found


def long_code_lines(text: str, limit: int = MAX_COLUMNS) -> list[tuple[int, int]]:
    """(line number, length) of each code-cell line of a MyST notebook longer than ``limit``.

    Only lines inside ``{code-cell}`` fences count: prose is wrapped by the browser.
    """
    found = []
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```{code-cell}"):
            in_code = True
        elif in_code and line.startswith("```"):
            in_code = False
        elif in_code and len(line) > limit:
            found.append((number, len(line)))
    return found


CHAPTERS = toc_chapters(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def test_long_code_lines_counts_code_cells_only():
    text = "\n".join(
        [
            "# A title",
            "p" * 120,  # prose: the browser wraps it
            "```{code-cell} ipython3",
            "x = 1",
            "y = '" + "a" * 90 + "'",  # line 5: 96 characters
            "#" * 88,  # exactly at the limit: allowed
            "```",
            "q" * 120,
            "```python",  # a plain code block is not a notebook cell
            "z" * 120,
            "```",
        ]
    )
    assert long_code_lines(text) == [(5, 96)]
    assert long_code_lines(text, limit=87) == [(5, 96), (6, 88)]


def test_toc_chapters_reads_nested_parts():
    toc = {"root": "book/intro", "parts": [{"chapters": [{"file": "book/a/b"}]}]}
    assert toc_chapters(toc) == ["book/intro.md", "book/a/b.md"]
    assert len(CHAPTERS) >= 20 and "book/intro.md" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_code_cells_fit_88_columns(chapter):
    long = long_code_lines((ROOT / chapter).read_text())
    assert not long, (
        f"{chapter}: code-cell lines longer than {MAX_COLUMNS} characters (line, length): "
        f"{long}; wrap comments and docstrings, split strings by implicit concatenation"
    )
