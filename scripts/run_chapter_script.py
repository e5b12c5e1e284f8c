"""Run one chapter as a plain Python script of its code cells, without Jupyter.

For a machine that has PyTorch but not jupyter-book, myst-nb or a kernel (the GPU machine):

    python scripts/run_chapter_script.py book/tgs/training.md --full --figures runs/figures

executes the chapter's ``{code-cell}`` blocks in order in one namespace, with ``myst_nb.glue``
replaced by the recorder of :mod:`segtutor.results` (and IPython's ``display`` by a print when
IPython is missing). In full mode it writes the chapter's full-size record,
``book/results/full/<chapter>.json``, as values arrive (a run stopped half-way leaves a valid
record of what it measured, marked incomplete: only a run that reaches the chapter's end marks it
complete). Each figure a cell shows is saved as a PNG under ``--figures``.
Lines that are IPython magics (``%...``, ``!...``) are skipped. Exit code 1 names the failing
cell; SIGTERM (a time limit) ends the run with exit code 143 and a last write of the record,
marked incomplete, with the time it ran.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Stopped(BaseException):
    """SIGTERM arrived (a time limit, ``scripts/gpu_session.py``): end the run, keep the record."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise Stopped


def _print_display(*objs: object, raw: bool = False, **kwargs: object) -> None:
    """What a notebook would show, as text: a MIME bundle's text/plain, a table, Markdown's
    source."""
    for obj in objs:
        if isinstance(obj, dict) and "text/plain" in obj:
            print(obj["text/plain"])
        elif callable(getattr(obj, "to_string", None)):  # a DataFrame or a Styler
            print(obj.to_string())
        elif isinstance(getattr(obj, "data", None), str):  # Markdown, HTML
            print(obj.data)
        else:
            print(repr(obj))


def _install_stubs(figures: Path | None) -> Callable[..., None]:
    """``myst_nb.glue`` -> the results recorder; IPython.display -> print, if IPython is absent;
    ``plt.show`` -> save and close the figures."""
    from segtutor import results

    stub = types.ModuleType("myst_nb")

    def glue(name: str, variable: object, display: bool = True) -> None:
        results.record_value(name, variable)

    stub.glue = glue  # type: ignore[attr-defined]
    sys.modules["myst_nb"] = stub

    try:
        import IPython.display

        # IPython without a kernel prints a claim's whole MIME bundle; print what a page shows
        IPython.display.display = _print_display
    except ImportError:
        shown = types.ModuleType("IPython.display")

        class _Text:
            def __init__(self, data: object = "", *args: object, **kwargs: object) -> None:
                self.data = data

        shown.display = _print_display  # type: ignore[attr-defined]
        for name in ("Markdown", "HTML", "Image", "Latex", "SVG"):
            setattr(shown, name, _Text)
        # only the submodule: `from IPython.display import display` finds it in sys.modules,
        # while libraries that probe for IPython itself (matplotlib) still see none
        sys.modules["IPython.display"] = shown

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counter = {"n": 0}

    def show(*args: object, **kwargs: object) -> None:
        for num in plt.get_fignums():
            if figures is not None:
                counter["n"] += 1
                figures.mkdir(parents=True, exist_ok=True)
                plt.figure(num).savefig(figures / f"figure_{counter['n']:02d}.png", dpi=80)
        plt.close("all")

    plt.show = show
    return show


def run(chapter: str, full: bool, figures: Path | None = None, root: Path = ROOT) -> int:
    """Execute ``chapter`` (a path like ``book/tgs/training.md`` under ``root``, the folder that
    holds ``book/``); 0 on success, 1 on a failing cell (after printing the cell number and the
    traceback), 2 when there is no such chapter."""
    os.environ["SEGTUTOR_QUICK"] = "0" if full else "1"
    os.environ.setdefault("SEGTUTOR_PROGRESS", "1")
    os.environ["SEGTUTOR_CHAPTER"] = chapter
    sys.path.insert(0, str(ROOT))
    from segtutor import results

    path = root / chapter
    if not path.is_file():
        print(f"no such chapter: {path}", file=sys.stderr)
        return 2
    flush_figures = _install_stubs(figures)
    cells = results.code_cells(path.read_text(encoding="utf-8"))
    if full:
        results.start(chapter, root=root)
    # Jupyter puts display() in every notebook's namespace; chapters rely on it
    namespace: dict[str, object] = {"__name__": "__main__", "display": _print_display}
    t_start = time.perf_counter()
    code = 0
    # a time limit's SIGTERM ends the run between two statements, so the record's last write
    # says how long it ran and that it is incomplete (the default action would leave it as the
    # last value found it)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    for k, cell in enumerate(cells, 1):
        source = "\n".join(
            "pass  # magic skipped" if line.lstrip().startswith(("%", "!")) else line
            for line in cell.splitlines()
        )
        t0 = time.perf_counter()
        try:
            exec(compile(source, f"{chapter}:cell{k}", "exec"), namespace)
        except Stopped:
            print(f"\n{chapter}: stopped (SIGTERM) in cell {k} of {len(cells)}", file=sys.stderr)
            code = 128 + signal.SIGTERM
            break
        except Exception:
            traceback.print_exc()
            print(f"\n{chapter}: cell {k} of {len(cells)} failed", file=sys.stderr)
            code = 1
            break
        flush_figures()  # Jupyter's inline backend shows the figures a cell leaves open
        print(f"[cell {k}/{len(cells)}: {time.perf_counter() - t0:.1f} s]", flush=True)
    signal.signal(signal.SIGTERM, previous)
    record = results.stop(complete=code == 0)
    mode = "full" if full else "quick"
    print(f"{chapter}: {mode} mode, {time.perf_counter() - t_start:.0f} s, exit {code}")
    if record is not None:
        print(f"full-size record: {record}")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", help="the chapter, e.g. book/tgs/training.md")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="full mode; writes the record")
    mode.add_argument("--quick", action="store_true", help="quick mode (the default)")
    parser.add_argument("--figures", type=Path, help="save every shown figure here as PNG")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the folder that holds book/ (default: this repo)"
    )
    args = parser.parse_args()
    sys.exit(run(args.chapter, args.full, args.figures, args.root.resolve()))


if __name__ == "__main__":
    main()
