"""Block diagrams drawn from a model itself: run it once, record the feature-map shapes of chosen
submodules (:func:`trace_shapes`), and draw one box per map with matplotlib.

A box's height shrinks with the resolution and its width grows with the channel count. In
:func:`draw_blocks` its vertical position is its resolution level (``log2`` of the stride, deeper
= lower), so an encoder-decoder draws itself as a "U" and a dilated network as a flat line.
:func:`draw_graph` places the boxes in columns instead, for parallel branches that fork from one
map and meet again (ASPP's atrous branches, PPM's pooling bins). Nothing is typed by hand:
change the model and the picture changes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from .outputs import main_output


@dataclass
class Node:
    """One recorded feature map: ``label``, ``channels``, ``height``, ``width``, ``stride``."""

    label: str
    channels: int
    height: int
    width: int
    stride: float


def trace_shapes(
    model: nn.Module,
    x: torch.Tensor,
    modules: Sequence[str | tuple[str, str]],
    training: bool = False,
) -> list[Node]:
    """Shapes of the outputs of the named submodules, in the order they run.

    Args:
        model: any ``nn.Module``; run once without gradients (its mode is restored).
        x: an input ``[N, C, H, W]``; ``N = 1`` is enough in eval mode.
        modules: dotted names as in ``model.named_modules()`` (e.g. ``"downs.0"``; ``""`` is the
            model itself, its logits), or ``(name, label)`` pairs. A module that runs several
            times is recorded each time.
        training: run in training mode, so that parts that run only in training (an auxiliary
            head) are recorded too. The buffers (BN running statistics) are restored afterwards;
            BN on a pooled 1x1 map then needs ``N >= 2``.
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
            # a hooked module returns anything: the model's output convention, or a tuple
            out = main_output(output) if isinstance(output, Mapping) else output
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                nodes.append(
                    Node(label, out.shape[1], out.shape[2], out.shape[3], size / out.shape[2])
                )

        return hook

    handles = [named[name].register_forward_hook(make_hook(label)) for name, label in wanted]
    was_training = model.training
    # a forward pass in training mode updates BN's running statistics: keep them to put back
    saved = [b.detach().clone() for b in model.buffers()] if training else []
    try:
        model.train(training)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)
    return nodes


def _draw_box(ax, node: Node, xc: float, yc: float, cmax: int) -> tuple[float, float]:
    """Draw ``node`` as a box centred at ``(xc, yc)``, its label above and its shape below; the
    height shrinks with the stride, the width grows with the channels (``cmax`` = widest box).
    Returns the box's ``(width, height)``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    level = math.log2(max(node.stride, 1))
    h = 0.25 + 0.65 * (1 / max(node.stride, 1)) ** 0.5  # finer map = taller box
    w = 0.2 + 0.6 * math.log2(1 + node.channels) / math.log2(1 + cmax)
    color = plt.cm.viridis(min(level / 5, 1.0))
    ax.add_patch(
        Rectangle(
            (xc - w / 2, yc - h / 2), w, h, facecolor=color, alpha=0.85, edgecolor="black", lw=0.8
        )
    )
    # a light background keeps the text readable where an arrow passes behind it
    clear = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5}
    ax.text(xc, yc + h / 2 + 0.06, node.label, ha="center", va="bottom", fontsize=8, bbox=clear)
    ax.text(
        xc,
        yc - h / 2 - 0.06,
        f"{node.channels}x{node.height}x{node.width}",
        ha="center",
        va="top",
        fontsize=7,
        color="0.25",
        bbox=clear,
    )
    return w, h


def draw_blocks(
    nodes: Sequence[Node],
    skips: Sequence[tuple[int, int]] = (),
    ax=None,
    title: str | None = None,
    skip_label: str = "skip",
):
    """Draw ``nodes`` left to right, level by stride; ``skips`` are ``(from, to)`` node indices
    drawn as dashed arrows (skip connections, pooling indices). Returns the matplotlib axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.25 * len(nodes)), 4))
    cmax = max(n.channels for n in nodes)
    boxes = []
    for i, n in enumerate(nodes):
        xc, yc = i * 1.2, -math.log2(max(n.stride, 1))
        boxes.append((xc, yc, *_draw_box(ax, n, xc, yc, cmax)))
    for (x0, y0, w0, _), (x1, y1, w1, _) in pairwise(boxes):
        ax.add_patch(
            FancyArrowPatch(
                (x0 + w0 / 2, y0),
                (x1 - w1 / 2, y1),
                arrowstyle="-|>",
                mutation_scale=10,
                color="0.3",
                lw=1,
            )
        )
    for a, b in skips:
        xa, ya, _, ha = boxes[a]
        xb, yb, _, hb = boxes[b]
        ax.add_patch(
            FancyArrowPatch(
                (xa, ya + ha / 2),
                (xb, yb + hb / 2),
                connectionstyle="arc3,rad=-0.25",
                arrowstyle="-|>",
                mutation_scale=10,
                color="tab:red",
                lw=1,
                ls="--",
                zorder=4,
            )
        )  # over the label it ends at
    levels = [-math.log2(max(n.stride, 1)) for n in nodes]
    ax.set_xlim(-0.8, 1.2 * (len(nodes) - 1) + 0.8)
    bottom, top = min(levels) - 0.9, max(levels) + 0.9
    # An arc3 curve with rad r between points d apart rises r * d / 2 above them, bent in *display*
    # space: its rise in data units depends on the y scale, which the limits set. For an arc that
    # starts at y0 (a box's top edge) and rises k = rise_px / the axes' height in pixels, the top
    # limit t must satisfy t - pad = y0 + k * (t - bottom): t = (y0 + pad - k * bottom) / (1 - k).
    frame = ax.get_window_extent()
    px_per_x = frame.width / (ax.get_xlim()[1] - ax.get_xlim()[0])
    for a, b in skips:
        y0 = max(boxes[a][1] + boxes[a][3] / 2, boxes[b][1] + boxes[b][3] / 2)
        k = 0.125 * abs(boxes[b][0] - boxes[a][0]) * px_per_x / frame.height
        if k < 0.9:
            top = max(top, (y0 + 0.3 - k * bottom) / (1 - k))
    ax.set_ylim(bottom, top)
    ticks = sorted(set(levels))
    ax.set_yticks(ticks, [f"1/{2 ** int(-t)}" for t in ticks])
    ax.set_ylabel("resolution")
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if skips:
        _dashed_legend(ax, skip_label)
    if title:
        ax.set_title(title)
    return ax


def graph_rows(
    columns: Sequence[float], rows: Mapping[int, float] | None = None, spacing: float = 1.0
) -> list[float]:
    """Row of each node for :func:`draw_graph`: ``rows[i]`` where given; the other nodes that
    share a column are stacked ``spacing`` apart, first on top, centred on row 0 (one node alone
    in its column sits on row 0)."""
    rows = dict(rows or {})
    stacked: dict[float, list[int]] = {}
    for i, col in enumerate(columns):
        if i not in rows:
            stacked.setdefault(col, []).append(i)
    for members in stacked.values():
        for k, i in enumerate(members):
            rows[i] = spacing * ((len(members) - 1) / 2 - k)
    return [rows[i] for i in range(len(columns))]


def draw_graph(
    nodes: Sequence[Node],
    edges: Sequence[tuple[int, int]],
    columns: Sequence[float],
    rows: Mapping[int, float] | None = None,
    dashed: Sequence[tuple[int, int]] = (),
    ax=None,
    title: str | None = None,
    dashed_label: str = "skip",
):
    """Draw ``nodes`` as a graph whose branches run in parallel, e.g. ASPP's atrous branches or
    PPM's pooling bins that fork from one map and meet at a concatenation.

    Node ``i`` sits in column ``columns[i]`` (left to right); nodes that share a column are
    stacked in their order, centred on the main row 0, unless ``rows`` places them
    (``{i: row}``, negative = below; see :func:`graph_rows`). Boxes look as in
    :func:`draw_blocks`: the height shrinks with the stride, the width grows with the channels,
    the colour changes with the resolution. ``edges`` are ``(from, to)`` node indices drawn as
    solid arrows, ``dashed`` as dashed red ones (a skip, a training-only head) labelled
    ``dashed_label``. Returns the matplotlib axes, with one rectangle patch per node and one
    arrow patch per edge.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    if len(columns) != len(nodes):
        raise ValueError(f"columns has {len(columns)} entries for {len(nodes)} nodes")
    bad = [e for e in (*edges, *dashed) if not all(0 <= i < len(nodes) for i in e)]
    if bad:
        raise ValueError(f"edges refer to nodes that do not exist: {bad}")
    ys = graph_rows(columns, rows)
    xs = [1.5 * c for c in columns]  # 1.2 in apart: room for labels of ~16 characters
    if ax is None:
        _, ax = plt.subplots(
            figsize=(0.8 * (max(xs) - min(xs) + 1.6), 0.8 * (max(ys) - min(ys) + 1.6) + 0.4)
        )
    cmax = max(n.channels for n in nodes)
    sizes = [_draw_box(ax, n, x, y, cmax) for n, x, y in zip(nodes, xs, ys)]

    def end(i: int, j: int) -> tuple[float, float]:
        """Where an edge between ``i`` and ``j`` meets box ``i``: on the side facing ``j``,
        shifted towards ``j``'s row so that the arrows of a fork or a join do not pile up."""
        w, h = sizes[i]
        if xs[i] == xs[j]:  # same column: top or bottom edge
            return xs[i], ys[i] + math.copysign(h / 2, ys[j] - ys[i])
        return (
            xs[i] + math.copysign(w / 2, xs[j] - xs[i]),
            ys[i] + 0.4 * h * math.tanh((ys[j] - ys[i]) / 2),
        )

    for pairs, style in ((edges, {"color": "0.3"}), (dashed, {"color": "tab:red", "ls": "--"})):
        for a, b in pairs:
            ax.add_patch(
                FancyArrowPatch(
                    end(a, b),
                    end(b, a),
                    arrowstyle="-|>",
                    mutation_scale=10,
                    lw=1,
                    shrinkA=0,
                    shrinkB=0,
                    **style,
                )
            )
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_axis_off()
    if dashed:
        _dashed_legend(ax, dashed_label)
    if title:
        ax.set_title(title)
    return ax


def _dashed_legend(ax, label: str) -> None:
    """A legend entry for the dashed red arrows (a line: an arrow patch shows as a blob)."""
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[Line2D([], [], color="tab:red", ls="--", lw=1, label=label)],
        loc="lower right",
        fontsize=8,
        frameon=False,
    )
