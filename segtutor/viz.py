"""Pictures for the book: overlays, mask grids, one-hot planes and training curves.

Every function takes numpy arrays or tensors, returns numpy arrays or a matplotlib
``Figure``, and never calls ``plt.show()``: the caller (a chapter, a test) decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

IGNORE_INDEX = 255

ArrayLike = np.ndarray | torch.Tensor


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A CPU numpy view of a tensor (detached) or the array itself."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def palette(num_classes: int, seed: int = 3) -> np.ndarray:
    """Distinct RGB colours ``[num_classes, 3]`` in [0, 1]; class 0 (background) is black.

    Up to 10 classes use matplotlib's ``tab10``; more are drawn from a seeded generator.
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    base = np.array(plt.get_cmap("tab10").colors, dtype=np.float64)
    if num_classes <= len(base) + 1:
        colours = base[: num_classes - 1]
    else:
        rng = np.random.default_rng(seed)
        colours = np.concatenate([base, rng.uniform(0.2, 1.0, (num_classes - 1 - len(base), 3))])
    return np.concatenate([np.zeros((1, 3)), colours], axis=0)


def colorize(
    labels: ArrayLike,
    num_classes: int | None = None,
    ignore_color: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Label map ``[H, W]`` (ints) to an RGB image ``[H, W, 3]`` in [0, 1]; 255 = ignore (white)."""
    lab = to_numpy(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {lab.shape}")
    lab = lab.astype(np.int64)
    valid = lab != IGNORE_INDEX
    if num_classes is None:
        num_classes = int(lab[valid].max()) + 1 if valid.any() else 1
    if valid.any() and (lab[valid].min() < 0 or lab[valid].max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be {IGNORE_INDEX} (ignore)")
    colours = palette(max(num_classes, 1))
    out = np.empty(lab.shape + (3,), dtype=np.float64)
    out[valid] = colours[lab[valid]]
    out[~valid] = np.asarray(ignore_color, dtype=np.float64)
    return out


def _as_rgb_float(image: ArrayLike) -> np.ndarray:
    """Image ``[H, W]``, ``[H, W, 3]`` or ``[3, H, W]`` (uint8 or float) to float RGB
    ``[H, W, 3]``."""
    img = to_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W], [H, W, 3] or [3, H, W], got shape {img.shape}")
    img = img.astype(np.float64)
    if to_numpy(image).dtype == np.uint8 or img.max() > 1.0 + 1e-6:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def overlay(
    image: ArrayLike,
    mask: ArrayLike,
    alpha: float = 0.5,
    num_classes: int | None = None,
    color: Sequence[float] | None = None,
) -> np.ndarray:
    """Blend a label mask over an image: ``[H, W, 3]`` float in [0, 1].

    ``mask`` is a label map ``[H, W]``: class 0 (background) and 255 (ignore) leave the image
    untouched, every other class is tinted with its palette colour (or ``color`` for a binary mask).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _as_rgb_float(image)
    lab = to_numpy(mask)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.shape != img.shape[:2]:
        raise ValueError(f"mask shape {lab.shape} does not match image shape {img.shape[:2]}")
    lab = lab.astype(np.int64)
    if color is not None:
        colours = np.zeros(lab.shape + (3,))
        colours[lab > 0] = np.asarray(color, dtype=np.float64)
    else:
        colours = colorize(np.where(lab == IGNORE_INDEX, 0, lab), num_classes)
    fg = (lab > 0) & (lab != IGNORE_INDEX)
    out = img.copy()
    out[fg] = (1 - alpha) * img[fg] + alpha * colours[fg]
    return out


def one_hot_planes(labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Label map ``[H, W]`` to its one-hot stack ``[num_classes, H, W]``.

    uint8; ignore -> all 0.
    """
    lab = to_numpy(labels).astype(np.int64)
    if lab.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {lab.shape}")
    valid = lab != IGNORE_INDEX
    if valid.any() and (lab[valid].min() < 0 or lab[valid].max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be {IGNORE_INDEX}")
    return (lab[None] == np.arange(num_classes)[:, None, None]).astype(np.uint8)


def show_one_hot(
    labels: ArrayLike, num_classes: int, class_names: Sequence[str] | None = None
) -> plt.Figure:
    """Figure: the label map followed by one binary plane per class."""
    planes = one_hot_planes(labels, num_classes)
    names = list(class_names) if class_names else [f"class {c}" for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    fig, axes = plt.subplots(1, num_classes + 1, figsize=(2.4 * (num_classes + 1), 2.6))
    axes[0].imshow(colorize(labels, num_classes), interpolation="nearest")
    axes[0].set_title("label map")
    for c in range(num_classes):
        axes[c + 1].imshow(planes[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[c + 1].set_title(f"{names[c]}\n(channel {c})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def mask_grid(
    images: Sequence[ArrayLike] | ArrayLike,
    masks: Sequence[ArrayLike] | ArrayLike,
    preds: Sequence[ArrayLike] | ArrayLike | None = None,
    num_classes: int | None = None,
    titles: Sequence[str] | None = None,
    max_items: int = 8,
    overlay_alpha: float | None = None,
) -> plt.Figure:
    """Figure with one column per item: image, mask and (optionally) prediction rows.

    ``images``: ``[N, H, W]``, ``[N, 3, H, W]`` or a list; ``masks`` and ``preds``: ``[N, H, W]``
    label maps. With ``overlay_alpha`` the mask and prediction are drawn over the image.
    """
    n = min(len(images), max_items)
    if len(masks) < n or (preds is not None and len(preds) < n):
        raise ValueError("images, masks and preds must have the same number of items")
    rows = [("image", None), ("mask", masks)] + (
        [("prediction", preds)] if preds is not None else []
    )
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 1.9 * len(rows)), squeeze=False)
    if num_classes is None:
        stacked = [to_numpy(m) for m in list(masks)[:n]]
        valid = [m[m != IGNORE_INDEX] for m in stacked]
        num_classes = max([int(v.max()) + 1 for v in valid if v.size] + [2])
    for j in range(n):
        img = _as_rgb_float(images[j])
        for i, (name, source) in enumerate(rows):
            ax = axes[i, j]
            if source is None:
                ax.imshow(img)
            elif overlay_alpha is not None:
                ax.imshow(overlay(img, source[j], overlay_alpha, num_classes))
            else:
                ax.imshow(colorize(source[j], num_classes), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
    keys: Sequence[str] | None = None,
    xlabel: str = "epoch",
    title: str | None = None,
    logy: Sequence[str] = (),
) -> plt.Figure:
    """Training curves: one panel per metric family, train and val on the same axes.

    ``history`` is either ``{"train_loss": [...], "val_loss": [...], ...}`` or a list of per-epoch
    dicts. Keys sharing a suffix after ``train_``/``val_`` share a panel.
    """
    if isinstance(history, Sequence) and not isinstance(history, Mapping):
        keys_all = list(dict.fromkeys(k for row in history for k in row))
        columns = {k: [row.get(k, np.nan) for row in history] for k in keys_all}
    elif isinstance(history, Mapping):
        columns = {k: list(v) for k, v in history.items()}
    else:
        raise TypeError("history must be a mapping of lists or a list of mappings")
    keys = [k for k in (keys or columns) if k not in ("epoch", "step", "lr_step")]
    if not keys:
        raise ValueError("history has nothing to plot")
    panels: dict[str, list[str]] = {}
    for k in keys:
        if k not in columns:
            raise ValueError(f"history has no key {k!r}; it has {sorted(columns)}")
        family = k.split("_", 1)[1] if k.startswith(("train_", "val_", "test_")) else k
        panels.setdefault(family, []).append(k)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    x = columns.get("epoch") or list(range(1, len(columns[keys[0]]) + 1))
    for ax, (family, members) in zip(axes[0], panels.items()):
        for k in members:
            ax.plot(x[: len(columns[k])], columns[k], marker="o", ms=3, label=k)
        ax.set_title(family)
        ax.set_xlabel(xlabel)
        if family in logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def interactive(build: Callable[[], Any], what: str) -> None:
    """Display the ipywidgets demo that ``build()`` returns, when a person runs the chapter.

    In the static book (:func:`segtutor.config.in_book_build`) there is no kernel behind a slider,
    so a widget would be dead weight (and would pull the widget renderer from a CDN): the cell
    then says in one line what the demo does in Jupyter, and ``build`` is not called. ``what``
    completes "In Jupyter, this cell shows ..."."""
    from IPython.display import Markdown, display

    from segtutor import config

    if config.in_book_build():
        display(
            Markdown(
                f"*In Jupyter, this cell shows {what}. Run the chapter there "
                "(`make lab`) to use it; the static figure above shows a few settings.*"
            )
        )
        return
    display(build())
