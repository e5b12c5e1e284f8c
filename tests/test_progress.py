"""segtutor.progress: bars show for a person and stay out of the book build."""

from __future__ import annotations

import io

from segtutor import progress


def test_bar_shows_unless_turned_off(monkeypatch):
    monkeypatch.delenv("SEGTUTOR_PROGRESS", raising=False)
    out = io.StringIO()
    assert list(progress.bar(range(3), desc="work", file=out)) == [0, 1, 2]
    assert "work" in out.getvalue() and "3/3" in out.getvalue()

    out = io.StringIO()
    assert list(progress.bar(range(3), show=False, file=out)) == [0, 1, 2]
    assert out.getvalue() == ""

    monkeypatch.setenv("SEGTUTOR_PROGRESS", "0")
    out = io.StringIO()
    assert list(progress.bar(range(3), desc="work", file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    assert not progress.enabled() and not progress.enabled(True)


def test_every_bar_of_the_package_goes_through_progress_bar():
    """A ``tqdm(...)`` made elsewhere ignores ``SEGTUTOR_PROGRESS=0`` (an explicit ``disable=``
    overrides ``TQDM_DISABLE``) and froze a widget into the built transposed-convolution page."""
    import pathlib
    import re

    root = pathlib.Path(progress.__file__).parent
    direct = re.compile(r"\btqdm\s*\(")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "progress.py" and direct.search(path.read_text())
    ]
    assert not offenders, f"progress bars made without segtutor.progress.bar: {offenders}"
