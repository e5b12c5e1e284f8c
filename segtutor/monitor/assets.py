"""visdom's web assets from the npm registry, so that its server starts with no other network.

On start, ``python -m visdom.server`` checks ``static/version.built`` and a list of JavaScript,
CSS, font and MathJax files, and fetches whatever is missing from several CDNs; offline a missing
MathJax file ends the server with exit status 1. The same library versions are published on
npm, and pip/npm registries are reachable where CDNs are not, so this module takes each one
with ``npm pack NAME@VERSION`` and copies the files to the names visdom checks. It is idempotent:
files already in place are not fetched again.

Run it as ``python -m segtutor.monitor.assets`` (``make visdom-assets``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# (npm package, version, [(file in the package, target under static/)]); a trailing "/" copies a
# folder. Versions are the ones visdom 0.2.4's build step downloads.
_GLYPH = "glyphicons-halflings-regular"
ASSETS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("jquery", "3.1.1", [("dist/jquery.min.js", "js/jquery.min.js")]),
    (
        "bootstrap",
        "3.3.7",
        [
            ("dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
            ("dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
            *[
                (f"dist/fonts/{_GLYPH}.{ext}", f"fonts/{_GLYPH}.{ext}")
                for ext in ("eot", "woff2", "woff", "ttf", "svg")
            ],
            # the build step checks this literal name (with the '#'), so it must exist too
            (f"dist/fonts/{_GLYPH}.svg", f"fonts/{_GLYPH}.svg#glyphicons_halflingsregular"),
        ],
    ),
    ("react", "16.2.0", [("umd/react.production.min.js", "js/react-react.min.js")]),
    ("react-dom", "16.2.0", [("umd/react-dom.production.min.js", "js/react-dom.min.js")]),
    ("react-modal", "3.1.10", [("dist/react-modal.min.js", "js/react-modal.min.js")]),
    ("plotly.js-dist-min", "2.11.1", [("plotly.min.js", "js/plotly-plotly.min.js")]),
    ("sjcl", "1.0.7", [("sjcl.js", "js/sjcl.js")]),
    (
        "layout-bin-packer",
        "1.4.0",
        [
            ("dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
            ("dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
        ],
    ),
    ("d3", "3.5.17", [("d3.min.js", "js/d3.v3.min.js")]),
    (
        "d3-selection-multi",
        "1.0.1",
        [("build/d3-selection-multi.js", "js/d3-selection-multi.v1.js")],
    ),
    ("save-svg-as-png", "1.4.17", [("lib/saveSvgAsPng.js", "js/saveSvgAsPng.js")]),
    ("react-resizable", "1.4.6", [("css/styles.css", "css/react-resizable-styles.css")]),
    ("react-grid-layout", "0.16.3", [("css/styles.css", "css/react-grid-layout-styles.css")]),
    # only the build step looks for it (no extension, in fonts/)
    ("classnames", "2.2.5", [("index.js", "fonts/classnames")]),
    (
        "mathjax",
        "2.7.5",
        [
            ("MathJax.js", "js/mathjax/2.7.5/MathJax.js"),
            ("config/", "js/mathjax/2.7.5/config/"),
            ("extensions/", "js/mathjax/2.7.5/extensions/"),
            ("jax/", "js/mathjax/2.7.5/jax/"),
            ("localization/", "js/mathjax/2.7.5/localization/"),
            ("fonts/HTML-CSS/TeX/woff/", "js/mathjax/2.7.5/fonts/HTML-CSS/TeX/woff/"),
            ("fonts/HTML-CSS/TeX/otf/", "js/mathjax/2.7.5/fonts/HTML-CSS/TeX/otf/"),
        ],
    ),
]

# the MathJax files the build step requests one by one (a missing one ends the server offline)
MATHJAX_CHECKED = [
    "MathJax.js",
    "config/Safe.js",
    "config/TeX-AMS-MML_HTMLorMML.js",
    "extensions/Safe.js",
    "jax/output/SVG/jax.js",
    "jax/output/SVG/config.js",
    "jax/output/SVG/fonts/TeX/fontdata.js",
    "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
]


def _package_dir() -> Path:
    # find_spec locates visdom without importing it (its import pulls in a lot and takes seconds)
    import importlib.util

    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise RuntimeError("visdom is not installed (see the Makefile's setup step)")
    return Path(spec.origin).resolve().parent


def static_dir() -> Path:
    """``<site-packages>/visdom/static`` of the installed visdom."""
    return _package_dir() / "static"


def visdom_version() -> str:
    """The installed visdom's version, read the way visdom reads it (its VERSION file)."""
    version_file = _package_dir() / "VERSION"
    return version_file.read_text().strip() if version_file.is_file() else "no_version_file"


def _present(static: Path, target: str) -> bool:
    path = static / target
    if target.endswith("/"):
        return path.is_dir() and any(path.iterdir())
    return path.is_file() and path.stat().st_size > 0


def missing(static: Path | None = None) -> list[str]:
    """Targets (relative to ``static/``) that are not in place yet.

    Plus ``version.built`` if stale.
    """
    static = static or static_dir()
    gone = [t for _, _, files in ASSETS for _, t in files if not _present(static, t)]
    gone += [
        f"js/mathjax/2.7.5/{f}"
        for f in MATHJAX_CHECKED
        if not (static / "js/mathjax/2.7.5" / f).is_file()
    ]
    stamp = static / "version.built"
    if not stamp.is_file() or stamp.read_text().strip() != visdom_version():
        gone.append("version.built")
    return sorted(set(gone))


def npm_pack(name: str, version: str, workdir: Path) -> Path:
    """``npm pack NAME@VERSION`` into ``workdir``.

    Returns the tarball's path (RuntimeError if npm fails).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not installed: it is needed once to fetch visdom's web assets "
            "(apt-get install npm, or install Node.js)"
        )
    proc = subprocess.run(
        [npm, "pack", f"{name}@{version}", "--silent", "--pack-destination", str(workdir)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack {name}@{version} failed: {proc.stderr.strip()[-500:]}")
    tarballs = sorted(workdir.glob("*.tgz"), key=lambda p: p.stat().st_mtime)
    if not tarballs:
        raise RuntimeError(f"npm pack {name}@{version} produced no tarball")
    return tarballs[-1]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)  # a crash never leaves a half file with the final name


def ensure_assets(static: Path | None = None, verbose: bool = True) -> list[str]:
    """Fetch what is missing; return the npm packages that were fetched (empty: all in place)."""
    static = static or static_dir()
    fetched: list[str] = []
    with tempfile.TemporaryDirectory(prefix="visdom-assets-") as tmp:
        for name, version, files in ASSETS:
            todo = [(s, t) for s, t in files if not _present(static, t)]
            if name == "mathjax" and any(
                not (static / "js/mathjax/2.7.5" / f).is_file() for f in MATHJAX_CHECKED
            ):
                todo = files
            if not todo:
                continue
            if verbose:
                print(f"visdom assets: npm pack {name}@{version}", flush=True)
            work = Path(tmp) / name
            work.mkdir()
            tarball = npm_pack(name, version, work)
            with tarfile.open(tarball) as tar:
                tar.extractall(work / "x", filter="data")
            package = work / "x" / "package"
            for src, target in todo:
                source = package / src.rstrip("/")
                if not source.exists():
                    raise RuntimeError(f"{name}@{version} has no {src}")
                _copy(source, static / target.rstrip("/"))
            fetched.append(f"{name}@{version}")
    # only now that every file is in place: the stamp tells visdom's build step to skip downloads
    (static / "version.built").write_text(visdom_version())
    still = missing(static)
    if still:
        raise RuntimeError(f"visdom assets still missing after the fetch: {still}")
    return fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing")
    args = parser.parse_args(argv)
    static = static_dir()
    if args.check:
        gone = missing(static)
        print("visdom assets: all in place" if not gone else f"visdom assets missing: {gone}")
        return 1 if gone else 0
    try:
        fetched = ensure_assets(static)
    except RuntimeError as err:
        print(f"visdom assets: {err}", file=sys.stderr)
        return 1
    print(
        f"visdom assets in {static}: "
        + (f"fetched {', '.join(fetched)}" if fetched else "all in place, nothing fetched")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
