"""Every choice of the TGS training recipe, each written once.

A field of :class:`TrainOptions` carries in its ``metadata`` everything else there is to say about
it: the help text, the rule its value must follow (a :class:`Number`, or ``choices``), its
quick/full default (``resolve``) and the metavar. The ``segtutor tgs train`` command line is
generated from these fields (:func:`segtutor.cli.add_dataclass_options`), and
:meth:`TrainOptions.validate` checks the same rules, so the parser and the Python API cannot
disagree. A field without ``help`` is not on the command line (the ablation switches).

This module imports nothing heavy (no torch): the command line builds its parser from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

# the largest of each quantity that still means something; beyond it a run would overflow or
# only fail much later (a model too wide to allocate)
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding range, accepted by every generator used
MAX_WIDTH = 8.0  # channel multiplier; 1 = the published widths
MAX_LR = 1.0  # Adam's peak learning rate; 1e-3 is the recipe's


@dataclass(frozen=True)
class Number:
    """The one rule of a numeric option: an integer or a finite real number in a range.

    ``expected`` says the rule in words ("a positive integer"); both the command line ("argument
    --lr: expected ..., got 'nan'") and :meth:`TrainOptions.validate` ("lr must be ..., got nan")
    use it. ``bool`` is never a number here, although Python counts ``True`` as 1.
    """

    kind: type
    low: float
    high: float = math.inf
    open_low: bool = False
    expected: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (a Python value, not text) follows the rule."""
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, int):
                return False
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def parse(self, text: str) -> int | float:
        """The value of a command-line word; ValueError ``expected ..., got 'text'`` otherwise."""
        try:
            value = self.kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not self.accepts(value):
            raise ValueError(f"expected {self.expected}, got {text!r}")
        return value


POSITIVE_INT = Number(int, 1, expected="a positive integer")
NON_NEGATIVE_INT = Number(int, 0, expected="an integer >= 0")
SEED = Number(int, 0, MAX_SEED, expected=f"an integer in [0, {MAX_SEED}]")
PORT = Number(int, 1, 65535, expected="a TCP port in [1, 65535]")
WIDTH = Number(float, 0, MAX_WIDTH, open_low=True, expected=f"a number in (0, {MAX_WIDTH:g}]")
LEARNING_RATE = Number(
    float, 0, MAX_LR, open_low=True, expected=f"a learning rate in (0, {MAX_LR:g}]"
)
WEIGHT = Number(float, 0, expected="a finite number >= 0")


def parse_fold_list(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]``; ValueError saying what was expected otherwise."""
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"expected fold numbers separated by commas, e.g. 0,1, got {text!r}"
        ) from None
    if not folds or min(folds) < 0:
        raise ValueError(f"expected fold numbers >= 0, e.g. 0,1, got {text!r}")
    return folds


def _meta(help: str = "", **rules: Any) -> dict[str, Any]:
    """The ``metadata`` of a :class:`TrainOptions` field: its command-line help and its rules.

    ``rules``: ``number`` (a :class:`Number`), ``choices`` (a tuple), ``parse`` (text -> value,
    ValueError when bad), ``resolve`` (``(quick, full)`` for a ``None`` default), ``metavar``.
    Without ``help`` the field is not on the command line. The help of a ``bool`` field
    describes the flag that changes it: ``--no-<name>`` when the default is True, ``--<name>``
    when it is False.
    """
    return {"help": help, **rules} if help else dict(rules)


@dataclass
class TrainOptions:
    """Every choice of the training recipe; ``None`` means "the quick/full default"
    (:meth:`resolved`).

    Recipe switches (``scse``, ``hypercolumn``, ``deep_supervision``, ``classify``, ``augment``,
    ``full_res_skip``, ``zero_init_residual``) exist so that the ablation chapter can turn the
    techniques off one at a time.
    """

    folds: int = field(
        default=5,
        metadata=_meta(
            "number of cross-validation folds (stratified by salt coverage)",
            number=POSITIVE_INT,
            metavar="K",
        ),
    )
    # quick: one long fold rather than K short ones; a CPU's minutes go further that way (a
    # fold of 3 epochs has not learned to find salt, and its masks are all blanked)
    train_folds: list[int] | None = field(
        default=None,
        metadata=_meta(
            "train only these folds, e.g. 0 or 0,2",
            parse=parse_fold_list,
            resolve=([0], None),
            metavar="LIST",
        ),
    )
    model: str = field(
        default="resunet34",
        metadata=_meta(
            "resunet34: the recipe's ResNet34 U-Net (scSE, hypercolumn, deep supervision, "
            "empty-image head); unet: the plain U-Net baseline",
            choices=("resunet34", "unet"),
        ),
    )
    width: float | None = field(
        default=None,
        metadata=_meta(
            "channel multiplier of the model, 1 = the published widths (ResNet34 encoder and a "
            "64-channel decoder; U-Net base 64)",
            number=WIDTH,
            resolve=(0.125, 1.0),
            metavar="W",
        ),
    )
    pretrained: bool = field(
        default=False,
        metadata=_meta(
            "start from ImageNet weights (must already be in torch's cache; nothing is downloaded)"
        ),
    )
    size_mode: str = field(
        default="pad",
        metadata=_meta(
            "how 101x101 images become 128x128: reflect-pad or resize (inverted exactly on the "
            "predictions)",
            choices=("pad", "resize"),
        ),
    )
    stage1_loss: str = field(
        default="bce", metadata=_meta("loss of stage 1", choices=("bce", "bce_dice"))
    )
    stage1_epochs: int | None = field(
        default=None,
        metadata=_meta("epochs of stage 1", number=NON_NEGATIVE_INT, resolve=(16, 30), metavar="E"),
    )
    lovasz: str = field(
        default="elu",
        metadata=_meta(
            "stage-2 loss: the Lovasz hinge on relu(errors), or on elu(errors)+1",
            choices=("hinge", "elu"),
        ),
    )
    symmetric_lovasz: bool = field(
        default=True,
        metadata=_meta(
            "stage 2: the Lovasz hinge of the salt class alone, instead of the symmetric form "
            "(the mean of the salt's and the background's hinge, which also scores an empty "
            "image by how well its background is found)"
        ),
    )
    cycles: int | None = field(
        default=None,
        metadata=_meta(
            "cosine warm-restart cycles of stage 2, one snapshot each; 0 skips stage 2",
            number=NON_NEGATIVE_INT,
            resolve=(2, 4),
            metavar="M",
        ),
    )
    cycle_epochs: int | None = field(
        default=None,
        metadata=_meta("epochs per cycle", number=POSITIVE_INT, resolve=(4, 20), metavar="E"),
    )
    lr: float | None = field(
        default=None,
        metadata=_meta(
            "peak learning rate of Adam", number=LEARNING_RATE, resolve=(3e-3, 1e-3), metavar="LR"
        ),
    )
    batch_size: int | None = field(
        default=None,
        metadata=_meta("images per batch", number=POSITIVE_INT, resolve=(16, 32), metavar="B"),
    )
    n_images: int | None = field(
        default=None,
        metadata=_meta(
            "use only the first N training images (for quick experiments)",
            number=POSITIVE_INT,
            metavar="N",
        ),
    )
    seed: int = field(
        default=0, metadata=_meta("random seed of folds, weights and batches", number=SEED)
    )
    amp: bool = field(
        default=True,
        metadata=_meta("on CUDA, train in float32 instead of automatic mixed precision"),
    )
    gpu_data: bool = field(
        default=True,
        metadata=_meta(
            "on CUDA, load batches through a DataLoader instead of keeping the whole (small) data "
            "set in GPU memory"
        ),
    )
    tensorboard: str | None = field(
        default=None,
        metadata=_meta(
            "write TensorBoard event files under DIR (view: tensorboard --logdir DIR)",
            metavar="DIR",
        ),
    )
    visdom: int | None = field(
        default=None,
        metadata=_meta(
            "log live plots to a visdom server on 127.0.0.1:PORT (start one with 'python -m "
            "visdom.server -port PORT -bind_local', single dashes); without a server the offline "
            "log is written instead",
            number=PORT,
            metavar="PORT",
        ),
    )
    progress: bool = field(default=True, metadata=_meta("no progress bars"))
    verbose: bool = True
    scse: bool = True
    hypercolumn: bool = True
    deep_supervision: bool = True
    classify: bool = True
    augment: bool = True
    # resunet34 only: a full-resolution skip into the last decoder block, and residual blocks
    # that start as the identity (ignored with pretrained=True, which brings its own weights)
    full_res_skip: bool = True
    zero_init_residual: bool = True
    aux_weight: float = field(default=0.2, metadata=_meta(number=WEIGHT))
    cls_weight: float = field(default=0.05, metadata=_meta(number=WEIGHT))

    @classmethod
    def from_namespace(cls, args: Any) -> TrainOptions:
        """Options from parsed ``segtutor tgs train`` arguments: every attribute of ``args``
        named like a field (the parser is generated from the fields, see :mod:`segtutor.cli`)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def resolved(self, quick: bool | None = None) -> TrainOptions:
        """A copy with every ``None`` that has a quick/full default filled in, checked: for the
        mode this process runs in, or for ``quick=True``/``False`` (a quick page naming the
        full-mode recipe it shows results of)."""
        # imported here: config imports torch, and the command line builds its parser from this
        # module without it
        from segtutor import config

        if quick is not None and not isinstance(quick, bool):
            raise TypeError(f"quick must be True, False or None, got {quick!r}")
        opts = replace(self)
        for f in fields(self):
            pair = f.metadata.get("resolve")
            if pair is not None and getattr(self, f.name) is None:
                value = config.pick(*pair) if quick is None else pair[0 if quick else 1]
                # a copy: the list in the metadata is shared by every TrainOptions
                setattr(opts, f.name, list(value) if isinstance(value, list) else value)
        opts.validate()
        for f in fields(self):
            number, value = f.metadata.get("number"), getattr(opts, f.name)
            if number is not None and number.kind is float and value is not None:
                setattr(opts, f.name, float(value))  # an int given for a float option
        return opts

    def validate(self) -> None:
        """Raise ValueError naming the option that breaks its rule (``None`` sizes pass: they
        are the quick/full defaults, checked again after :meth:`resolved`)."""
        for f in fields(self):
            value = getattr(self, f.name)
            number, choices = f.metadata.get("number"), f.metadata.get("choices")
            if number is not None and value is not None and not number.accepts(value):
                raise ValueError(f"{f.name} must be {number.expected}, got {value!r}")
            if choices is not None and value not in choices:
                raise ValueError(
                    f"{f.name} must be {' or '.join(map(repr, choices))}, got {value!r}"
                )
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (one fold is held out), got {self.folds}")
        if self.train_folds is not None:
            bad = [f for f in self.train_folds if not 0 <= f < self.folds]
            if bad:
                raise ValueError(f"train_folds {bad} out of range 0..{self.folds - 1}")
        if (self.stage1_epochs or 0) + (self.cycles or 0) * (self.cycle_epochs or 0) < 1:
            raise ValueError("nothing to train: stage1_epochs and cycles are both 0")

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`segtutor.models.build_model` (without the name).

        ``width`` is a channel multiplier, 1 = the published widths: the ResNet34 encoder's
        channels and a 64-channel decoder for ``resunet34``, ``base_width=64`` for ``unet``.
        """
        width = 1.0 if self.width is None else float(self.width)
        kwargs: dict[str, Any] = {"num_classes": 1, "in_channels": 1, "pretrained": self.pretrained}
        if self.model == "resunet34":
            kwargs.update(
                encoder_width=width,
                decoder_width=max(4, round(64 * width)),
                attention=self.scse,
                hypercolumn=self.hypercolumn,
                deep_supervision=self.deep_supervision,
                classify=self.classify,
                full_res_skip=self.full_res_skip,
                zero_init_residual=self.zero_init_residual and not self.pretrained,
            )
        elif self.model == "unet":
            kwargs.update(base_width=max(2, round(64 * width)))
        return kwargs


def _default_text(value: Any) -> str:
    """A default as the command line writes it: ``2``, ``0.001``, ``0,2`` (a fold list), or
    ``all K`` (no fold list: every fold)."""
    if value is None:
        return "all K"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return f"{value:g}"


def quick_full_text(pair: Sequence[Any]) -> str:
    """The help text of a quick/full default: ``"quick 2, full 30"``, or one value if equal."""
    quick, full = pair
    if quick == full:
        return _default_text(quick)
    return f"quick {_default_text(quick)}, full {_default_text(full)}"
