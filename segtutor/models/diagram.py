"""Block diagrams drawn from a model itself: run it once, record the feature-map shapes of chosen
submodules, and draw one box per map with matplotlib.

A box's vertical position is its resolution level (``log2`` of the stride, deeper = lower), its
height shrinks with the resolution and its width grows with the channel count, so an encoder-
decoder draws itself as a "U" and a dilated network as a flat line. Nothing is typed by hand:
change the model and the picture changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Node:
    """One recorded feature map: ``label``, ``channels``, ``height``, ``width``, ``stride``."""

    label: str
    channels: int
    height: int
    width: int
    stride: float


def trace_shapes(model: nn.Module, x: torch.Tensor,
                 modules: Sequence[str | tuple[str, str]]) -> list[Node]:
    """Shapes of the outputs of the named submodules, in the order they run.

    Args:
        model: any ``nn.Module``; run once in eval mode without gradients (its mode is restored).
        x: an input ``[1, C, H, W]``.
        modules: dotted names as in ``model.named_modules()`` (e.g. ``"downs.0"``), or
            ``(name, label)`` pairs. A module that runs several times is recorded each time.
    """
    named = dict(model.named_modules())
    wanted = [(m, m) if isinstance(m, str) else (m[0], m[1]) for m in modules]
    missing = [name for name, _ in wanted if name not in named]
    if missing:
        raise ValueError(f"modules not found in the model: {missing}")
    nodes: list[Node] = []
    size = x.shape[-2]

    def make_hook(label: str):
        def hook(module, inputs, output):
            out = output["out"] if isinstance(output, dict) else output
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                nodes.append(Node(label, out.shape[1], out.shape[2], out.shape[3],
                                  size / out.shape[2]))
        return hook

    handles = [named[name].register_forward_hook(make_hook(label)) for name, label in wanted]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return nodes


def draw_blocks(nodes: Sequence[Node], skips: Sequence[tuple[int, int]] = (), ax=None,
                title: str | None = None, skip_label: str = "skip"):
    """Draw ``nodes`` left to right, level by stride; ``skips`` are ``(from, to)`` node indices
    drawn as dashed arrows (skip connections, pooling indices). Returns the matplotlib axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.25 * len(nodes)), 4))
    cmax = max(n.channels for n in nodes)
    boxes = []
    for i, n in enumerate(nodes):
        level = math.log2(max(n.stride, 1))
        h = 0.25 + 0.65 * (1 / max(n.stride, 1)) ** 0.5      # finer map = taller box
        w = 0.2 + 0.6 * math.log2(1 + n.channels) / math.log2(1 + cmax)
        xc, yc = i * 1.2, -level
        color = plt.cm.viridis(min(level / 5, 1.0))
        ax.add_patch(Rectangle((xc - w / 2, yc - h / 2), w, h, facecolor=color, alpha=0.85,
                               edgecolor="black", lw=0.8))
        ax.text(xc, yc + h / 2 + 0.06, n.label, ha="center", va="bottom", fontsize=8)
        ax.text(xc, yc - h / 2 - 0.06, f"{n.channels}x{n.height}x{n.width}", ha="center",
                va="top", fontsize=7, color="0.25")
        boxes.append((xc, yc, w, h))
    for (x0, y0, w0, _), (x1, y1, w1, _) in zip(boxes[:-1], boxes[1:]):
        ax.add_patch(FancyArrowPatch((x0 + w0 / 2, y0), (x1 - w1 / 2, y1), arrowstyle="-|>",
                                     mutation_scale=10, color="0.3", lw=1))
    for k, (a, b) in enumerate(skips):
        xa, ya, _, ha = boxes[a]
        xb, yb, _, hb = boxes[b]
        ax.add_patch(FancyArrowPatch((xa, ya + ha / 2), (xb, yb + hb / 2),
                                     connectionstyle="arc3,rad=-0.25", arrowstyle="-|>",
                                     mutation_scale=10, color="tab:red", lw=1, ls="--",
                                     label=skip_label if k == 0 else None))
    levels = [-math.log2(max(n.stride, 1)) for n in nodes]
    ax.set_xlim(-0.8, 1.2 * (len(nodes) - 1) + 0.8)
    # an arc3 curve with rad r between points d apart rises about r * d / 2 above them
    rise = max([0.125 * abs(boxes[b][0] - boxes[a][0]) + boxes[a][1] - max(levels)
                for a, b in skips] + [0.0])
    ax.set_ylim(min(levels) - 0.9, max(levels) + 0.9 + rise)
    ticks = sorted(set(levels))
    ax.set_yticks(ticks, [f"1/{2 ** int(-t)}" for t in ticks])
    ax.set_ylabel("resolution")
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if skips:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax
