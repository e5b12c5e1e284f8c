"""Every chapter listed in _toc.yml executes in quick mode, and the book builds without warnings.

The book is built once per test session, exactly as `make book` builds it (scripts/build_book.py,
`-W -n --keep-going`), so a later `make book` reuses the execution cache. Each chapter then gets
its own test that fails with the chapter's name and the failing cell's traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scripts import build_book, gpu_session
from tests.browser import OFFLINE, chromium, needs_browser

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
SUMMARY: list[str] = []


def toc_files(node=None) -> list[str]:
    """Every `root`/`file` entry of _toc.yml, in order."""
    if node is None:
        node = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def is_notebook(chapter: str) -> bool:
    """A MyST notebook has a kernelspec in its front matter; plain pages have no code to run."""
    return "kernelspec:" in (ROOT / f"{chapter}.md").read_text().split("\n---", 1)[0]


CHAPTERS = toc_files()


@pytest.fixture(scope="session")
def book_build():
    code = build_book.build(quick=True)
    log = (BUILD / "build.log").read_text()
    times = dict(build_book.chapter_times(BUILD))
    SUMMARY[:] = [f"{s:7.1f} s  {name}" for name, s in sorted(times.items(), key=lambda kv: -kv[1])]
    return code, log, times


def test_toc_lists_existing_chapters():
    assert CHAPTERS, "_toc.yml lists no chapter"
    for chapter in CHAPTERS:
        assert (ROOT / f"{chapter}.md").exists(), (
            f"_toc.yml names {chapter}, which has no {chapter}.md"
        )


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes(book_build, chapter):
    _, _, times = book_build
    reports = sorted((BUILD / "html" / "reports").glob(f"{chapter}*.log"))
    if reports:
        pytest.fail(
            f"chapter {chapter} failed to execute; the failing cell and traceback:\n"
            + reports[0].read_text()[-6000:],
            pytrace=False,
        )
    page = BUILD / "html" / f"{chapter}.html"
    assert page.exists(), f"chapter {chapter} has no page {page.relative_to(ROOT)}"
    if is_notebook(chapter):
        assert any(Path(uri).with_suffix("") == Path(chapter) for uri in times), (
            f"chapter {chapter} has no execution record in the jupyter cache: was it executed?"
        )


@pytest.mark.book
def test_book_builds_without_warnings(book_build):
    code, log, _ = book_build
    problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert code == 0, "the book build failed:\n" + "\n".join(
        problems[-40:] or log.splitlines()[-40:]
    )
    assert (BUILD / "html" / "index.html").exists()


@pytest.mark.book
def test_every_claim_of_the_book_holds(book_build):
    """Each comparison a chapter's prose makes (segtutor.claims.claim) holds in this build."""
    import json

    from segtutor import claims

    found = json.loads((BUILD / "claims.json").read_text())
    bad = claims.failing(found)
    assert not bad, "claims in the prose that the executed code does not bear out:\n" + "\n".join(
        bad
    )


CDN = re.compile(r"""<script[^>]+src=["']https?://[^"']*(mathjax|jupyter-widgets|require)""", re.I)


@pytest.mark.book
def test_every_chapter_page_wraps_long_output_lines(book_build):
    """Outputs wider than the page (package source listings are formatted at 100 columns) wrap
    instead of scrolling sideways: the site's style sheet says so and every chapter loads it."""
    css = (BUILD / "html" / "_static" / "segtutor.css").read_text()
    assert re.search(r"div\.cell_output pre\s*\{[^}]*white-space:\s*pre-wrap", css)
    pages = sorted((BUILD / "html" / "book").rglob("*.html"))
    assert pages
    missing = [
        str(p.relative_to(BUILD)) for p in pages if "_static/segtutor.css" not in p.read_text()
    ]
    assert not missing, f"pages without the site's style sheet: {missing}"


@pytest.mark.book
def test_no_page_loads_math_or_widgets_from_a_cdn(book_build):
    """Formulas and widgets come from the site itself, so a downloaded copy works offline."""
    pages = sorted((BUILD / "html").rglob("*.html"))
    assert pages
    bad = [str(p.relative_to(BUILD)) for p in pages if CDN.search(p.read_text(errors="replace"))]
    assert not bad, f"pages that load MathJax or the widget renderer from a CDN: {bad}"
    with_widgets = [
        str(p.relative_to(BUILD))
        for p in pages
        if "application/vnd.jupyter.widget-view+json" in p.read_text(errors="replace")
    ]
    assert not with_widgets, f"pages that embed a dead widget (no kernel behind it): {with_widgets}"


@pytest.mark.book
@needs_browser
def test_formulas_render_with_the_network_off(book_build, tmp_path):
    """Chromium, with every host name unresolvable, typesets every formula of every page."""
    pages = [
        p
        for p in sorted((BUILD / "html").rglob("*.html"))
        if 'class="math' in p.read_text(errors="replace")
    ]
    assert pages, "no page with a formula: the check would prove nothing"
    raw = []
    for i, page in enumerate(pages):
        proc = chromium(
            page.as_uri(), tmp_path / f"profile{i}", [*OFFLINE, "--dump-dom"], ["mjx-container"]
        )
        # code and scripts may hold a literal \( or $$; only the prose must have none left
        text = re.sub(r"<(script|pre)\b.*?</\1>", "", proc.stdout, flags=re.S)
        if "mjx-container" not in text or re.search(r"\\\(|\$\$", text):
            raw.append(str(page.relative_to(BUILD)))
    assert not raw, f"pages whose formulas stay raw TeX with the network off: {raw}"


# Chapters that train a model (the list a GPU session runs in full mode): each records at least
# one claim that its trained result beats the trivial baseline on the same split
# (segtutor.metrics.constant_prediction_scores or empty_prediction_map), so a budget that stops
# learning fails the build.
TRAINING_CHAPTERS = [chapter[: -len(".md")] for chapter in gpu_session.TRAINING_CHAPTERS]


@pytest.mark.book
@pytest.mark.parametrize("chapter", TRAINING_CHAPTERS)
def test_training_chapter_claims_to_beat_its_baseline(book_build, chapter):
    import json

    found = json.loads((BUILD / "claims.json").read_text())
    mine = [c for c in found if c["chapter"] == f"{chapter}.md"]
    against_baseline = [
        c for c in mine if re.search(r"baseline|background|floor|empty|no salt", c["claim"], re.I)
    ]
    assert against_baseline, (
        f"{chapter} trains a model but records no claim against its trivial baseline "
        f"(claims: {[c['claim'] for c in mine]})"
    )
