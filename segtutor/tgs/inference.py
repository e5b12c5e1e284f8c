"""Prediction: the models of a run, their averaged probabilities with flip TTA, the submission.

Snapshot and fold ensembling are one operation here: every model gets the same weight, and the
probabilities (not the masks) are averaged, then mapped back from 128x128 to 101x101.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from segtutor import config
from segtutor.fileio import check_target
from segtutor.models import build_model
from segtutor.models.outputs import main_output, split_output
from segtutor.progress import bar
from segtutor.tgs.layout import (
    TGS_SIZE,
    TGSInputError,
    _require_dir,
    from_model_size,
    load_split,
    to_model_size,
)
from segtutor.tgs.options import TrainOptions
from segtutor.tgs.postprocessing import postprocess
from segtutor.tgs.run import _read_postprocess, read_run_config, snapshot_paths
from segtutor.tgs.submission import write_submission
from segtutor.train.checkpoint import load_checkpoint
from segtutor.train.tta import tta_predict


def build(opts: TrainOptions) -> torch.nn.Module:
    """The model of the recipe: :func:`segtutor.models.build_model` with
    :meth:`TrainOptions.model_kwargs`."""
    return build_model(opts.model, **opts.model_kwargs())


def load_members(opts: TrainOptions, paths: Sequence[str | os.PathLike]) -> list[torch.nn.Module]:
    """Models rebuilt from snapshot files (``torch.load(weights_only=True)``), in eval mode."""
    members = []
    for path in paths:
        state = load_checkpoint(path)  # names the file when it is damaged
        model = build(opts)
        try:
            model.load_state_dict(state.get("model", state))
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TGSInputError(
                f"snapshot {path} does not hold the weights of this run's model "
                f"({opts.model}, width {opts.width}): {first}"
            ) from None
        members.append(model.eval())
    return members


def _model_outputs(model: torch.nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Eval-mode outputs as a dict: ``"out"`` logits ``[B,1,H,W]`` and, for a model with the
    empty-image head, ``"cls"`` logits ``[B,1]``.

    In eval mode the models return only the segmentation logits; the ResNet34 U-Net returns
    its empty-image logit too when asked (``return_cls=True``), from the same forward pass.
    """
    if getattr(model, "classification_head", None) is None:
        return {"out": main_output(model(images))}
    out, extras = split_output(model(images, return_cls=True))
    return {"out": out, "cls": extras["cls"].reshape(-1, 1)}


@torch.no_grad()
def predict_probs(
    members: Sequence[torch.nn.Module],
    images: Tensor,
    size_mode: str = "pad",
    tta: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Average salt probabilities of several models (snapshots, folds) with optional flip TTA.

    Args:
        members: models (eval mode is set here); each gets the same weight, so snapshot and
            fold ensembling are both plain means of probabilities.
        images: ``[N, 1, 128, 128]`` inputs at the model size (see :func:`to_model_size`).
        size_mode: how they were made, to map the probabilities back to 101x101.
        tta: horizontal-flip TTA (:func:`segtutor.train.tta.hflip_tta`).

    Returns:
        ``probs`` float32 ``[N, 101, 101]`` on the CPU and ``salt_prob`` ``[N]`` (the empty-image
        head's probability that the image has salt) or None for models without that head.
    """
    if not members:
        raise ValueError("members must contain at least one model")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = config.device()
    transforms_ = ("identity", "hflip") if tta else ("identity",)
    probs = torch.zeros(images.shape[0], TGS_SIZE, TGS_SIZE)
    salt: Tensor | None = torch.zeros(images.shape[0])
    starts = bar(
        range(0, images.shape[0], batch_size),
        show=progress,
        leave=False,
        desc=f"predict ({len(members)} models, tta={tta})",
    )
    for model in members:
        model.to(device).eval()
    for start in starts:
        x = images[start : start + batch_size].to(device)
        batch_probs, batch_salt = 0.0, 0.0
        for model in members:
            out = tta_predict(lambda t, m=model: _model_outputs(m, t), x, transforms_)
            batch_probs = batch_probs + out["out"][:, 0].float()
            if salt is not None and "cls" in out:
                batch_salt = batch_salt + out["cls"][:, 0].float()
            else:
                salt = None
        mean = batch_probs / len(members)
        probs[start : start + x.shape[0]] = from_model_size(mean, size_mode).cpu()
        if salt is not None:
            salt[start : start + x.shape[0]] = (batch_salt / len(members)).cpu()
    return probs, salt


def predict(
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    threshold: float | str = "auto",
    min_size: int | str = "auto",
    empty_threshold: float | str = "auto",
    tta: bool = True,
    snapshots: str = "all",
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict ``split`` of ``data_dir`` with every model of a run and write ``submission.csv``.

    Snapshot and fold ensembling (mean probability), flip TTA, the threshold and minimum
    component size (``"auto"``: the ones chosen on the out-of-fold predictions at training
    time), the empty-image rule (``empty_threshold``: blank an image whose salt probability is
    below it; ``"auto"``: the one chosen with the others), 101x101, :func:`write_submission`
    (atomic, validated).

    Returns a summary dict: ``n_images``, ``n_models``, ``threshold``, ``min_size``,
    ``empty_threshold``, ``n_empty`` (images predicted without salt), ``path``.
    """
    run = _require_dir(Path(run_dir), "run folder")
    data = _require_dir(Path(data_dir), "data folder")
    out = Path(out)
    if out.is_dir():
        raise TGSInputError(f"--out {out} is a folder; give a file name such as submission.csv")
    if not out.parent.is_dir():
        raise TGSInputError(f"cannot write {out}: folder {out.parent} does not exist")
    check_target(out)  # a device or a FIFO is refused now, not after the predictions
    if snapshots not in ("all", "last"):
        raise ValueError(f"snapshots must be 'all' or 'last', got {snapshots!r}")
    cfg = read_run_config(run)
    opts = cfg["options"]
    paths: list[Path] = []
    for k in cfg["trained_folds"]:
        fold_paths = snapshot_paths(run / f"fold{k}")
        paths += fold_paths if snapshots == "all" else fold_paths[-1:]
    if "auto" in (threshold, min_size, empty_threshold):
        chosen = _read_postprocess(run / "postprocess.json")
        threshold = chosen["threshold"] if threshold == "auto" else threshold
        min_size = chosen["min_size"] if min_size == "auto" else min_size
        empty_threshold = (
            chosen["empty_threshold"] if empty_threshold == "auto" else empty_threshold
        )
    arrays = load_split(data, split)
    members = load_members(opts, paths)
    x = to_model_size(arrays.images, opts.size_mode)
    probs, salt = predict_probs(
        members, x, opts.size_mode, tta=tta, batch_size=batch_size, progress=progress
    )
    masks = postprocess(probs, float(threshold), int(min_size), salt, empty_threshold)
    write_submission(out, arrays.ids, masks)
    return {
        "n_images": len(arrays.ids),
        "n_models": len(members),
        "threshold": float(threshold),
        "min_size": int(min_size),
        "empty_threshold": float(empty_threshold),
        "n_empty": int((masks.flatten(1).sum(1) == 0).sum()),
        "path": str(out),
    }
