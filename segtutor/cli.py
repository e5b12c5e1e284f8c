"""The ``segtutor`` command line.

    segtutor tgs synth    --out DIR [--n N]                 write a synthetic TGS-like data set
    segtutor tgs train    --data DIR --out RUN [--folds K]  train the case-study models
    segtutor tgs predict  --data DIR --run RUN --out FILE   write submission.csv
    segtutor tgs evaluate --data DIR --submission FILE      print the TGS mAP of a submission

Every sub-command is a thin call into :mod:`segtutor.tgs`. Bad input (a missing folder, a file
that is not what it should be, a malformed submission) prints one line ``segtutor ...: error:
...`` on stderr and exits with status 2; set ``SEGTUTOR_DEBUG=1`` to see the traceback instead.

The options of ``tgs train`` are not written here: :func:`add_dataclass_options` generates them
from the fields of :class:`segtutor.tgs.TrainOptions` (help, rule, quick/full default, metavar).
Building the parser imports neither torch nor the workflow's modules, so that ``--help`` and
usage errors answer at once.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from segtutor import tgs
from segtutor.data.constants import TGS_SIZE
from segtutor.tgs.options import POSITIVE_INT, SEED, Number, TrainOptions, quick_full_text

EXIT_BAD_INPUT = 2

# the largest of each quantity that still means something (the options of `tgs train` have
# theirs in segtutor.tgs.options)
MAX_IMAGES = 100_000  # synthetic images per split (the competition: 4,000 and 18,000)
MAX_PIXELS = TGS_SIZE * TGS_SIZE  # a minimum component size above the image size removes everything

IMAGE_COUNT = Number(int, 1, MAX_IMAGES, expected=f"a positive integer, at most {MAX_IMAGES}")
TEST_IMAGE_COUNT = Number(int, 0, MAX_IMAGES, expected=f"an integer >= 0, at most {MAX_IMAGES}")
PROBABILITY = Number(float, 0, 1, expected="a number in [0, 1]")
PIXELS = Number(int, 0, MAX_PIXELS, expected=f"a number of pixels in [0, {MAX_PIXELS}]")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.HelpFormatter):
    """Add "(default: X)" to the help of an option that takes a value and has a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # a flag (no value) says nothing of its default; 0 == False, so a 0 default shows none
        if (
            "%(default)" not in text
            and action.option_strings
            and action.nargs != 0
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from ``parse`` (text -> value, ValueError when bad): argparse prints
    the message as a one-line usage error after the option's name, exit status 2 ("argument
    --lr: expected a learning rate in (0, 1], got 'nan'")."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _auto_or(number: Number) -> Callable[[str], Any]:
    """A parse function: ``"auto"`` or a value that follows ``number``'s rule."""
    return lambda text: "auto" if text == "auto" else number.parse(text)


def add_dataclass_options(parser: argparse.ArgumentParser, options: type) -> None:
    """Add one option per field of the dataclass ``options`` whose metadata has a ``help``.

    The option is ``--<name>`` (underscores become dashes) stored under the field's name, so
    that ``options(**vars(args))`` restricted to the fields rebuilds the object
    (:meth:`segtutor.tgs.TrainOptions.from_namespace`). A ``bool`` field is a flag that flips
    its default: ``--no-<name>`` when the default is True. The metadata gives the rest (see
    :mod:`segtutor.tgs.options`): ``number`` or ``parse`` (the type check), ``choices``,
    ``metavar``, and ``resolve``, the quick/full default, which the help text states.
    """
    for f in fields(options):
        meta = f.metadata
        if "help" not in meta:
            continue
        text = meta["help"]
        if "resolve" in meta:
            text += f" (default: {quick_full_text(meta['resolve'])})"
        flag = f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(
                f"--no-{flag}" if f.default else f"--{flag}",
                dest=f.name,
                action="store_false" if f.default else "store_true",
                help=text,
            )
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default}
        for key in ("metavar", "choices"):
            if key in meta:
                kwargs[key] = meta[key]
        parse = meta["number"].parse if "number" in meta else meta.get("parse")
        _value(parser, f"--{flag}", text, parse, **kwargs)


def _value(
    p: argparse.ArgumentParser,
    flag: str,
    help: str,
    parse: Callable[[str], Any] | None = None,
    **kwargs: Any,
) -> None:
    """An option that takes a value; ``parse`` (text -> value, ValueError when bad) checks it."""
    if parse is not None:
        kwargs["type"] = _argument_type(parse)
    p.add_argument(flag, help=help, **kwargs)


def _path(p: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:
    """A required option naming a file or folder."""
    p.add_argument(flag, required=True, type=Path, metavar=metavar, help=help)


def _add_quick(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="quick mode: the small sizes meant for a CPU (sets SEGTUTOR_QUICK=1); without it "
        "the mode follows SEGTUTOR_QUICK, which defaults to quick exactly when there is no "
        "CUDA GPU",
    )


def _step(sub: Any, name: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The sub-command ``segtutor tgs <name>``, which calls ``run(args)``; the first line of
    ``run``'s docstring is its one-line help, the rest its description."""
    summary, _, description = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    p = sub.add_parser(
        name, help=summary, description=" ".join(description.split()), formatter_class=_Formatter
    )
    p.set_defaults(func=run)
    return p


def _synth_parser(sub: Any) -> None:
    p = _step(sub, "synth", _cmd_synth)
    _path(p, "--out", "DIR", "folder to write (created if missing; must be empty if it exists)")
    _value(
        p,
        "--n",
        "number of training images (the real competition has 4000)",
        IMAGE_COUNT.parse,
        default=4000,
        metavar="N",
    )
    _value(
        p,
        "--n-test",
        "number of test images; default: a quarter of --n",
        TEST_IMAGE_COUNT.parse,
        default=None,
        metavar="N",
    )
    _value(p, "--seed", "random seed: the same seed writes the same files", SEED.parse, default=0)


def _train_parser(sub: Any) -> None:
    p = _step(sub, "train", _cmd_train)
    _value(
        p,
        "--data",
        "data in Kaggle's layout (the real download or 'segtutor tgs synth' "
        "output); default: write a synthetic set to RUN/data first",
        type=Path,
        default=None,
        metavar="DIR",
    )
    _path(
        p, "--out", "RUN", "run folder for the configuration, snapshots and out-of-fold predictions"
    )
    add_dataclass_options(p, TrainOptions)
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the folds an earlier call finished in --out, continue a fold it left "
        "unfinished from its last resume point (every few epochs) and train the others "
        "(same data and options; for runs split over several sittings); without "
        "it --out must be a new or empty folder",
    )
    _add_quick(p)


def _predict_parser(sub: Any) -> None:
    p = _step(sub, "predict", _cmd_predict)
    _path(p, "--data", "DIR", "data in Kaggle's layout")
    _path(p, "--run", "RUN", "run folder of 'segtutor tgs train'")
    _path(p, "--out", "FILE", "the submission file to write")
    p.add_argument(
        "--split", choices=("test", "train"), default="test", help="which images to predict"
    )
    _value(
        p,
        "--threshold",
        "probability threshold, or 'auto': the best on the out-of-fold predictions",
        _auto_or(PROBABILITY),
        default="auto",
        metavar="T",
    )
    _value(
        p,
        "--min-size",
        "drop predicted components smaller than this (at 101x101), or "
        "'auto': chosen on the out-of-fold predictions",
        _auto_or(PIXELS),
        default="auto",
        metavar="PIXELS",
    )
    _value(
        p,
        "--empty-threshold",
        "blank the mask when the classifier head's salt probability "
        "is below P (only for models with that head; 0: never), or 'auto': chosen on the "
        "out-of-fold predictions",
        _auto_or(PROBABILITY),
        default="auto",
        metavar="P",
    )
    p.add_argument(
        "--no-tta", action="store_true", help="no horizontal-flip test-time augmentation"
    )
    p.add_argument(
        "--snapshots",
        choices=("all", "last"),
        default="all",
        help="average every snapshot of a fold, or use only its last",
    )
    _value(p, "--batch-size", "images per batch", POSITIVE_INT.parse, default=64, metavar="B")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_quick(p)


def _evaluate_parser(sub: Any) -> None:
    p = _step(sub, "evaluate", _cmd_evaluate)
    _path(p, "--data", "DIR", "data in Kaggle's layout")
    _path(p, "--submission", "FILE", "a submission.csv (id,rle_mask)")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``segtutor`` argument parser (exposed for tests and for the book)."""
    parser = _Parser(
        prog="segtutor",
        description="Command line of segtutor, the companion package of the book on semantic "
        "segmentation in PyTorch.",
        formatter_class=_Formatter,
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    top.required = True
    tgs_parser = top.add_parser(
        "tgs",
        help="the TGS Salt Identification case study",
        description="The TGS Salt Identification workflow of the book's case study: make or read "
        "the data in Kaggle's layout, train, predict a submission, score it.",
        formatter_class=_Formatter,
    )
    sub = tgs_parser.add_subparsers(dest="tgs_command", metavar="STEP", parser_class=_Parser)
    sub.required = True
    for add in (_synth_parser, _train_parser, _predict_parser, _evaluate_parser):
        add(sub)
    return parser


# --------------------------------------------------------------------------------------------
# Sub-commands: each one parses nothing, checks nothing the workflow checks, and calls it.
# --------------------------------------------------------------------------------------------


def _cmd_synth(args: argparse.Namespace) -> int:
    """write a synthetic TGS-like data set in Kaggle's folder layout

    Write the synthetic TGS-like data set (segtutor.data.make_tgs_like) in the exact layout of
    the Kaggle download: train/images, train/masks, train.csv, depths.csv, test/images,
    sample_submission.csv, and test/masks (which the real competition does not have) so that
    test predictions can be scored.
    """
    root = tgs.synth(args.out, n=args.n, n_test=args.n_test, seed=args.seed)
    print(f"wrote the synthetic TGS-like set to {root}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """train the case-study models (k folds, two loss stages, snapshots)

    Train the TGS case-study recipe: k folds stratified by salt coverage; per fold, stage 1 with
    BCE (or BCE+Dice), then stage 2 with the Lovasz hinge loss under cosine annealing with warm
    restarts, saving one snapshot at the end of every cycle. Writes RUN/config.json,
    RUN/fold<k>/snapshot_<j>.pt, RUN/fold<k>/history.json, RUN/oof.pt (out-of-fold
    probabilities) and RUN/postprocess.json (the threshold and minimum component size chosen on
    them, used by 'segtutor tgs predict').
    """
    options = TrainOptions.from_namespace(args)
    run = tgs.train(args.out, data=args.data, options=options, resume=args.resume)
    print(f"run written to {run}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """predict the test images and write submission.csv

    Predict with every snapshot of every trained fold (averaged), with horizontal-flip TTA,
    threshold the probabilities, remove small components and the masks of images the classifier
    head calls empty, crop back to 101x101, and write Kaggle's id,rle_mask file atomically,
    validated by decoding every row.
    """
    summary = tgs.predict(
        args.data,
        args.run,
        args.out,
        split=args.split,
        threshold=args.threshold,
        min_size=args.min_size,
        empty_threshold=args.empty_threshold,
        tta=not args.no_tta,
        snapshots=args.snapshots,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(
        f"wrote {summary['n_images']} rows to {args.out} "
        f"(threshold {summary['threshold']:.2f}, min size {summary['min_size']}, empty-image "
        f"threshold {summary['empty_threshold']:.2f}; {summary['n_empty']} masks empty)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """print the TGS mAP of a submission

    Score a submission with the competition's metric (mean over images of the precision at IoU
    thresholds 0.50..0.95) against the true masks, looked up as DIR/train/masks/<id>.png or
    DIR/test/masks/<id>.png (only the synthetic set has test masks). An id with no mask, or a
    malformed row, is an error.
    """
    score = tgs.evaluate_submission(args.data, args.submission)
    print(f"{score:.6f}")
    return 0


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segtutor`` console script; returns the exit status.

    0 on success, 2 on bad input (one line on stderr). Unexpected errors (bugs) are not caught,
    so their traceback is there to read.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        os.environ["SEGTUTOR_QUICK"] = "1"
    prog = f"segtutor {args.command} {getattr(args, 'tgs_command', '')}".strip()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # By the package's convention ValueError/OSError mean bad input (a path, a file, an
        # argument); anything else is a bug and keeps its traceback.
        if os.environ.get("SEGTUTOR_DEBUG", "").strip() in {"1", "true", "yes"}:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
