"""MathJax for the built book, served from the site itself (no CDN).

By default Sphinx points every page at MathJax on a CDN; a reader who downloaded the site, or a
training room without network, then sees raw ``\\(4 \\times 4\\)`` instead of formulas. This script
takes MathJax from the npm registry (``npm pack``, as ``segtutor.monitor.assets`` does for
visdom) into ``_assets/mathjax/`` at the book's root, which ``_config.yml`` adds to the site's
static files; ``_config.yml`` sets ``mathjax_path`` to it. Idempotent: nothing is fetched when
the files are in place. Run by ``make book`` and ``make test`` (``make book-assets``).
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segtutor.monitor.assets import npm_pack  # noqa: E402

MATHJAX = ("mathjax", "3.2.2")
TARGET = ROOT / "_assets" / "mathjax"
ENTRY = "tex-mml-chtml.js"  # the component _config.yml's mathjax_path names
# What the entry point loads at run time: TeX extensions (autoload), the CHTML fonts, the menu
# and its accessibility parts. Left out: the speech engine (sre, 4 MB) and the other bundles.
PARTS = [ENTRY, "input", "output", "ui", "a11y", "adaptors"]
STAMP = TARGET / ".version"


def in_place(target: Path = TARGET) -> bool:
    """True when the pinned MathJax version is complete under ``target``."""
    stamp = target / ".version"
    return (
        stamp.is_file()
        and stamp.read_text().strip() == "@".join(MATHJAX)
        and all((target / part).exists() for part in PARTS)
    )


def fetch(target: Path = TARGET) -> bool:
    """Fetch MathJax into ``target`` unless it is in place; True when something was fetched."""
    if in_place(target):
        return False
    name, version = MATHJAX
    with tempfile.TemporaryDirectory(prefix="book-assets-") as tmp:
        tarball = npm_pack(name, version, Path(tmp))
        with tarfile.open(tarball) as tar:
            tar.extractall(Path(tmp) / "x", filter="data")
        es5 = Path(tmp) / "x" / "package" / "es5"
        staging = target.with_name(target.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for part in PARTS:
            src = es5 / part
            if src.is_dir():
                shutil.copytree(src, staging / part)
            else:
                shutil.copyfile(src, staging / part)
        (staging / ".version").write_text("@".join(MATHJAX))
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)  # a half-copied folder never carries the final name
    return True


def main() -> int:
    try:
        fetched = fetch()
    except RuntimeError as err:
        print(
            f"book assets: {err}\nMathJax is needed once, from the npm registry, so that the "
            "book's formulas render without network (apt-get install npm).",
            file=sys.stderr,
        )
        return 1
    print(
        f"book assets: MathJax {'@'.join(MATHJAX)} "
        f"{'fetched into' if fetched else 'already in'} {TARGET.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
