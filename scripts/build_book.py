"""Build the book with every chapter executed; used by `make book` and by tests/test_book.py.

Why a script and not a bare `jupyter-book build`:
- jupyter-book caches each chapter's execution keyed on the chapter's own code only. A change in
  `segtutor/` would otherwise leave stale outputs in the book and let `make test` pass on old
  results, so the cache is dropped whenever the package, the requirements or the mode change.
- it records and prints how long each chapter took to execute, slowest first.
- Sphinx warnings and failing cells fail the build (-W -n --keep-going): without -W, a chapter
  whose cell raises still lets `jupyter-book build` exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --all: Sphinx re-reads every page, so the warnings of a chapter that failed last time are
# raised again (an incremental build would skip the unchanged page and exit 0).
FLAGS = ["-W", "-n", "--keep-going", "--all"]
# A progress bar is for a person watching a chapter run in Jupyter; in the built page it is a
# stale widget. tqdm (>= 4.66) takes its defaults from TQDM_* variables, and segtutor's own
# progress options (segtutor.progress) read SEGTUTOR_PROGRESS.
# SEGTUTOR_BOOK_BUILD=1: interactive demos show a note instead of dead sliders (segtutor.viz).
QUIET_BUILD = {"TQDM_DISABLE": "1", "SEGTUTOR_PROGRESS": "0", "SEGTUTOR_BOOK_BUILD": "1"}


def fingerprint(quick: bool | None) -> str:
    """Hash of everything outside a chapter that changes what a chapter prints."""
    h = hashlib.sha256()
    files = sorted((ROOT / "segtutor").rglob("*.py")) + [
        ROOT / "requirements.txt",
        ROOT / "_config.yml",
    ]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    h.update(f"quick={quick}".encode())
    return h.hexdigest()


def chapter_times(build: Path) -> list[tuple[str, float]]:
    """(chapter, seconds) for every executed chapter in the jupyter cache, slowest first."""
    cache_dir = build / ".jupyter_cache"
    if not cache_dir.exists():
        return []
    from jupyter_cache import get_cache

    rows = []
    for record in get_cache(str(cache_dir)).list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is None:
            continue
        try:
            name = str(Path(record.uri).resolve().relative_to(ROOT))
        except ValueError:
            name = record.uri
        rows.append((name, float(seconds)))
    return sorted(rows, key=lambda r: -r[1])


def executed_notebooks(build: Path) -> list[tuple[str, object]]:
    """(chapter path, executed notebook) for the newest cache record of every chapter."""
    cache_dir = build / ".jupyter_cache"
    if not cache_dir.exists():
        return []
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    newest = {}
    for record in cache.list_cache_records():
        try:
            name = str(Path(record.uri).resolve().relative_to(ROOT))
        except ValueError:
            name = record.uri
        if name not in newest or record.created > newest[name].created:
            newest[name] = record
    return [(name, cache.get_cache_bundle(rec.pk).nb) for name, rec in sorted(newest.items())]


def write_claims(build: Path) -> list[dict]:
    """Collect every chapter's claims (segtutor.claims) into _build/claims.json and report them."""
    from segtutor import claims

    found = claims.collect(executed_notebooks(build), build / "claims.json")
    bad = claims.failing(found)
    print(f"claims: {len(found) - len(bad)} of {len(found)} hold (_build/claims.json)")
    for line in bad:
        print(f"  does NOT hold: {line}")
    return found


def build(quick: bool | None, out: Path = ROOT) -> int:
    """Run the build; return jupyter-book's exit code. ``quick=None`` leaves the mode automatic."""
    build_dir = out / "_build"
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / ".segtutor-fingerprint"
    # key the cache on the mode the chapters will actually run in, so that `make test` (quick
    # forced) and `make book` (automatic: quick without CUDA) share it on a CPU machine
    if quick is None:
        from segtutor import config

        effective = config.is_quick()
    else:
        effective = quick
    fp = fingerprint(effective)
    if stamp.exists() and stamp.read_text() != fp:
        print(
            "segtutor or the configuration changed since the last build: re-executing every chapter"
        )
        shutil.rmtree(build_dir / ".jupyter_cache", ignore_errors=True)
        shutil.rmtree(build_dir / "jupyter_execute", ignore_errors=True)
    # reports of earlier failures would otherwise outlive the fix
    shutil.rmtree(build_dir / "html" / "reports", ignore_errors=True)
    env = dict(os.environ)
    if quick is not None:
        env["SEGTUTOR_QUICK"] = "1" if quick else "0"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    env.update(QUIET_BUILD)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(ROOT), *FLAGS]
    if out != ROOT:
        cmd += ["--path-output", str(out)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    with open(build_dir / "build.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    elapsed = time.time() - t0
    stamp.write_text(fp)
    times = chapter_times(build_dir)
    (build_dir / "chapter_times.json").write_text(json.dumps(times, indent=1))
    print(f"\nbook build: exit code {code} after {elapsed:.0f} s")
    write_claims(build_dir)
    if times:
        print(
            "chapter execution times (cached chapters keep the time of their last run), "
            "slowest first:"
        )
        for name, seconds in times:
            print(f"  {seconds:7.1f} s  {name}")
    return code


def build_chapter(chapter: str, quick: bool | None) -> int:
    """Execute and render one chapter alone (as the book would), for working on that chapter.

    Uses the book's configuration (minus the logo, whose path is relative to the root) and writes
    into /tmp, so it neither touches nor depends on the other chapters or _build/.
    """

    import yaml

    path = (ROOT / chapter).resolve()
    if not path.exists():
        raise SystemExit(f"no such chapter: {chapter}")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg.pop("logo", None)
    # a {ref} to a label in another chapter cannot resolve when this chapter is built alone;
    # the book build (make book / make test) still fails on an undefined label
    sphinx_cfg = cfg.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_cfg["suppress_warnings"] = [*sphinx_cfg.get("suppress_warnings", []), "ref.ref"]
    out = Path(tempfile.gettempdir()) / f"segtutor-chapter-{path.stem}"
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "_config.yml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, **QUIET_BUILD)
    if quick is not None:
        env["SEGTUTOR_QUICK"] = "1" if quick else "0"
    # jupyter-book builds a single page from its folder and would execute the folder's other
    # chapters too: build a copy that sits alone in its own folder.
    alone = out / "src" / path.name
    shutil.rmtree(alone.parent, ignore_errors=True)
    alone.parent.mkdir(parents=True)
    shutil.copy2(path, alone)
    if (ROOT / "_assets").is_dir():  # the site's own MathJax (scripts/book_assets.py)
        (alone.parent / "_assets").symlink_to(ROOT / "_assets")
    (alone.parent / "_css").symlink_to(ROOT / "_css")  # the site's style sheet
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(exe),
        "build",
        str(alone),
        "--config",
        str(cfg_file),
        "--path-output",
        str(out),
        *FLAGS,
    ]
    t0 = time.time()
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    reports = sorted(out.rglob("reports/*.log"))
    for report in reports:
        print(f"--- {report}\n{report.read_text()[-6000:]}")
    print(
        f"\n{chapter}: exit code {code}, {time.time() - t0:.1f} s (execution and rendering); "
        f"page under {out}/_build/_page"
    )
    return code


def run_full_chapter(chapter: str, figures: Path | None = None) -> int:
    """Execute one chapter in full mode as a script of its code cells and write its full-size
    record ``book/results/full/<chapter>.json`` (:mod:`segtutor.results`).

    A script, not a notebook: the GPU machines this is meant for have no jupyter-book or kernel.
    The record is what the quick-mode page shows beside its own result; commit it.
    """
    path = Path(chapter) if Path(chapter).is_absolute() else ROOT / chapter
    rel = path.resolve().relative_to(ROOT).as_posix()
    if figures is None:
        figures = Path(tempfile.gettempdir()) / f"segtutor-full-{Path(rel).stem}"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "run_chapter_script.py"),
        rel,
        "--full",
        "--figures",
        str(figures),
    ]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="force quick mode (SEGTUTOR_QUICK=1)")
    mode.add_argument("--full", action="store_true", help="force full mode (SEGTUTOR_QUICK=0)")
    parser.add_argument(
        "--chapter",
        help="build only this chapter (e.g. book/intro.md), into /tmp; with --full, run it as a "
        "script of its code cells and write its full-size record (no jupyter-book needed)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        help="with --full --chapter: save the chapter's figures here (default /tmp/...)",
    )
    args = parser.parse_args()
    quick = True if args.quick else (False if args.full else None)
    if args.chapter and args.full:
        sys.exit(run_full_chapter(args.chapter, args.figures))
    sys.exit(build_chapter(args.chapter, quick) if args.chapter else build(quick))


if __name__ == "__main__":
    main()
