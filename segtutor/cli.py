"""The ``segtutor`` command line.

    segtutor tgs synth    --out DIR [--n N]                 write a synthetic TGS-like data set
    segtutor tgs train    --data DIR --out RUN [--folds K]  train the case-study models
    segtutor tgs predict  --data DIR --run RUN --out FILE   write submission.csv
    segtutor tgs evaluate --data DIR --submission FILE      print the TGS mAP of a submission

Every sub-command is a thin call into :mod:`segtutor.tgs`. Bad input (a missing folder, a file
that is not what it should be, a malformed submission) prints one line ``segtutor ...: error:
...`` on stderr and exits with status 2; set ``SEGTUTOR_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.HelpFormatter):
    """Add "(default: X)" to an option's help when it has a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def _checked_number(convert: Callable[[str], Any], accept: Callable[[Any], bool],
                    expected: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, then ``accept`` the value, or say what was
    ``expected`` (argparse turns the message into a one-line usage error, exit code 2, that
    starts with the option's name: "argument --lr: expected ...")."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _finite(convert: Callable[[str], float]) -> Callable[[str], float]:
    """``float`` that refuses NaN and infinities (every float option here is a finite quantity)."""

    def parse(text: str) -> float:
        value = convert(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    return parse


# the largest of each quantity that still means something; beyond it a run would overflow or
# only fail much later (a model too wide to allocate, a data set too large for memory)
MAX_SEED = 2**32 - 1          # NumPy's legacy seeding range, accepted by every generator used
MAX_IMAGES = 100_000          # synthetic images per split (the competition: 4,000 and 18,000)
MAX_WIDTH = 8.0               # channel multiplier; 1 = the published widths
MAX_LR = 1.0                  # Adam's peak learning rate; 1e-3 is the recipe's
MAX_PIXELS = 101 * 101        # a minimum component size above the image size removes everything

_positive_int = _checked_number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _checked_number(int, lambda v: v >= 0, "an integer >= 0")
_image_count = _checked_number(int, lambda v: 1 <= v <= MAX_IMAGES,
                               f"a positive integer, at most {MAX_IMAGES}")
_test_image_count = _checked_number(int, lambda v: 0 <= v <= MAX_IMAGES,
                                    f"an integer >= 0, at most {MAX_IMAGES}")
_seed = _checked_number(int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
_port = _checked_number(int, lambda v: 1 <= v <= 65535, "a TCP port in [1, 65535]")
_width = _checked_number(_finite(float), lambda v: 0 < v <= MAX_WIDTH,
                         f"a number in (0, {MAX_WIDTH:g}]")
_learning_rate = _checked_number(_finite(float), lambda v: 0 < v <= MAX_LR,
                                 f"a learning rate in (0, {MAX_LR:g}]")
_probability = _checked_number(_finite(float), lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_pixels = _checked_number(int, lambda v: 0 <= v <= MAX_PIXELS,
                          f"a number of pixels in [0, {MAX_PIXELS}]")


def _threshold(text: str) -> float | str:
    return "auto" if text == "auto" else _probability(text)


def _min_size(text: str) -> int | str:
    return "auto" if text == "auto" else _pixels(text)


def _fold_list(text: str) -> list[int]:
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected fold numbers separated by commas, e.g. 0,1, got {text!r}"
        ) from None
    if not folds or min(folds) < 0:
        raise argparse.ArgumentTypeError(f"expected fold numbers >= 0, e.g. 0,1, got {text!r}")
    return folds


def _add_quick(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick", action="store_true",
        help="quick mode: the small sizes meant for a CPU (sets SEGTUTOR_QUICK=1); without it the "
             "mode follows SEGTUTOR_QUICK, which defaults to quick exactly when there is no CUDA GPU",
    )


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

    tgs = top.add_parser(
        "tgs", help="the TGS Salt Identification case study",
        description="The TGS Salt Identification workflow of the book's case study: make or read "
                    "the data in Kaggle's layout, train, predict a submission, score it.",
        formatter_class=_Formatter,
    )
    sub = tgs.add_subparsers(dest="tgs_command", metavar="STEP", parser_class=_Parser)
    sub.required = True

    # ---- synth
    p = sub.add_parser(
        "synth", help="write a synthetic TGS-like data set in Kaggle's folder layout",
        description="Write the synthetic TGS-like data set (segtutor.data.make_tgs_like) in the "
                    "exact layout of the Kaggle download: train/images, train/masks, train.csv, "
                    "depths.csv, test/images, sample_submission.csv, and test/masks (which the "
                    "real competition does not have) so that test predictions can be scored.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="folder to write (created if missing; must be empty if it exists)")
    p.add_argument("--n", type=_image_count, default=4000, metavar="N",
                   help="number of training images (the real competition has 4000)")
    p.add_argument("--n-test", type=_test_image_count, default=None, metavar="N",
                   help="number of test images; default: a quarter of --n")
    p.add_argument("--seed", type=_seed, default=0,
                   help="random seed: the same seed writes the same files")
    p.set_defaults(func=_cmd_synth)

    # ---- train
    p = sub.add_parser(
        "train", help="train the case-study models (k folds, two loss stages, snapshots)",
        description="Train the TGS case-study recipe: k folds stratified by salt coverage; per "
                    "fold, stage 1 with BCE (or BCE+Dice), then stage 2 with the Lovasz hinge "
                    "loss under cosine annealing with warm restarts, saving one snapshot at the "
                    "end of every cycle. Writes RUN/config.json, RUN/fold<k>/snapshot_<j>.pt, "
                    "RUN/fold<k>/history.json, RUN/oof.pt (out-of-fold probabilities) and "
                    "RUN/postprocess.json (the threshold and minimum component size chosen on "
                    "them, used by 'segtutor tgs predict').",
        formatter_class=_Formatter,
    )
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="data in Kaggle's layout (the real download or 'segtutor tgs synth' "
                        "output); default: write a synthetic set to RUN/data first")
    p.add_argument("--out", required=True, type=Path, metavar="RUN",
                   help="run folder for the configuration, snapshots and out-of-fold predictions")
    p.add_argument("--folds", type=_positive_int, default=5, metavar="K",
                   help="number of cross-validation folds (stratified by salt coverage)")
    p.add_argument("--train-folds", type=_fold_list, default=None, metavar="LIST",
                   help="train only these folds, e.g. 0 or 0,2 (default: all K)")
    p.add_argument("--model", choices=("resunet34", "unet"), default="resunet34",
                   help="resunet34: the recipe's ResNet34 U-Net (scSE, hypercolumn, deep "
                        "supervision, empty-image head); unet: the plain U-Net baseline")
    p.add_argument("--width", type=_width, default=None, metavar="W",
                   help="channel multiplier of the model, 1 = the published widths (ResNet34 "
                        "encoder and a 64-channel decoder; U-Net base 64); default: quick 0.125, "
                        "full 1")
    p.add_argument("--pretrained", action="store_true",
                   help="start from ImageNet weights (must already be in torch's cache; nothing "
                        "is downloaded)")
    p.add_argument("--size-mode", choices=("pad", "resize"), default="pad",
                   help="how 101x101 images become 128x128: reflect-pad or resize (inverted exactly "
                        "on the predictions)")
    p.add_argument("--stage1-loss", choices=("bce", "bce_dice"), default="bce",
                   help="loss of stage 1")
    p.add_argument("--stage1-epochs", type=_non_negative_int, default=None, metavar="E",
                   help="epochs of stage 1 (default: quick 2, full 30)")
    p.add_argument("--lovasz", choices=("hinge", "elu"), default="elu",
                   help="stage-2 loss: the Lovasz hinge on relu(errors), or on elu(errors)+1")
    p.add_argument("--cycles", type=_non_negative_int, default=None, metavar="M",
                   help="cosine warm-restart cycles of stage 2, one snapshot each; 0 skips stage 2 "
                        "(default: quick 1, full 4)")
    p.add_argument("--cycle-epochs", type=_positive_int, default=None, metavar="E",
                   help="epochs per cycle (default: quick 1, full 20)")
    p.add_argument("--lr", type=_learning_rate, default=None, metavar="LR",
                   help="peak learning rate (default 1e-3 for Adam)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help="images per batch (default: quick 16, full 32)")
    p.add_argument("--n-images", type=_positive_int, default=None, metavar="N",
                   help="use only the first N training images (for quick experiments)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="random seed of folds, weights and batches")
    p.add_argument("--no-amp", action="store_true",
                   help="on CUDA, train in float32 instead of automatic mixed precision")
    p.add_argument("--no-gpu-data", action="store_true",
                   help="on CUDA, load batches through a DataLoader instead of keeping the whole "
                        "(small) data set in GPU memory")
    p.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="write TensorBoard event files under DIR (view: tensorboard --logdir DIR)")
    p.add_argument("--visdom", type=_port, default=None, metavar="PORT",
                   help="log live plots to a visdom server on 127.0.0.1:PORT (start one with "
                        "'python -m visdom.server -port PORT -bind_local', single dashes); without "
                        "a server the offline log is written instead")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="keep the folds an earlier call finished in --out and train the others "
                        "(same data and options; for runs split over several sittings); without "
                        "it --out must be a new or empty folder")
    _add_quick(p)
    p.set_defaults(func=_cmd_train)

    # ---- predict
    p = sub.add_parser(
        "predict", help="predict the test images and write submission.csv",
        description="Predict with every snapshot of every trained fold (averaged), with "
                    "horizontal-flip TTA, threshold the probabilities, remove small components "
                    "and the masks of images the classifier head calls empty, crop back to "
                    "101x101, and write Kaggle's id,rle_mask file atomically, validated by "
                    "decoding every row.",
        formatter_class=_Formatter,
    )
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="data in Kaggle's layout")
    p.add_argument("--run", required=True, type=Path, metavar="RUN", help="run folder of 'segtutor tgs train'")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the submission file to write")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="which images to predict")
    p.add_argument("--threshold", type=_threshold, default="auto", metavar="T",
                   help="probability threshold, or 'auto': the best on the out-of-fold predictions")
    p.add_argument("--min-size", type=_min_size, default="auto", metavar="PIXELS",
                   help="drop predicted components smaller than this (at 101x101), or 'auto': "
                        "chosen on the out-of-fold predictions")
    p.add_argument("--empty-threshold", type=_probability, default=0.5, metavar="P",
                   help="blank the mask when the classifier head's salt probability is below P "
                        "(only for models with that head)")
    p.add_argument("--no-tta", action="store_true", help="no horizontal-flip test-time augmentation")
    p.add_argument("--snapshots", choices=("all", "last"), default="all",
                   help="average every snapshot of a fold, or use only its last")
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="images per batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_quick(p)
    p.set_defaults(func=_cmd_predict)

    # ---- evaluate
    p = sub.add_parser(
        "evaluate", help="print the TGS mAP of a submission",
        description="Score a submission with the competition's metric (mean over images of the "
                    "precision at IoU thresholds 0.50..0.95) against the true masks, looked up "
                    "as DIR/train/masks/<id>.png or DIR/test/masks/<id>.png (only the synthetic "
                    "set has test masks). An id with no mask, or a malformed row, is an error.",
        formatter_class=_Formatter,
    )
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="data in Kaggle's layout")
    p.add_argument("--submission", required=True, type=Path, metavar="FILE",
                   help="a submission.csv (id,rle_mask)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


# --------------------------------------------------------------------------------------------
# Sub-commands: each one parses nothing, checks nothing the workflow checks, and calls it.
# --------------------------------------------------------------------------------------------


def _cmd_synth(args: argparse.Namespace) -> int:
    from segtutor import tgs

    root = tgs.synth(args.out, n=args.n, n_test=args.n_test, seed=args.seed)
    print(f"wrote the synthetic TGS-like set to {root}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from segtutor import tgs

    options = tgs.TrainOptions.from_namespace(args)
    run = tgs.train(args.out, data=args.data, options=options, resume=args.resume)
    print(f"run written to {run}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from segtutor import tgs

    summary = tgs.predict(
        args.data, args.run, args.out,
        split=args.split, threshold=args.threshold, min_size=args.min_size,
        empty_threshold=args.empty_threshold, tta=not args.no_tta, snapshots=args.snapshots,
        batch_size=args.batch_size, progress=not args.no_progress,
    )
    print(f"wrote {summary['n_images']} rows to {args.out} "
          f"(threshold {summary['threshold']:.2f}, min size {summary['min_size']})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segtutor import tgs

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
