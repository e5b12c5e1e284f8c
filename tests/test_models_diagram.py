"""segtutor.models.diagram on graphs with parallel branches: recorded shapes, layout, drawing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import nn

from segtutor.models.diagram import Node, draw_graph, graph_rows, trace_shapes


class Fork(nn.Module):
    """A stem at stride 2, two parallel branches (a 3x3 conv and a pooled 1x1 branch with BN)
    concatenated, and a head that runs only in training, like an auxiliary classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.wide = nn.Conv2d(4, 6, 3, padding=2, dilation=2)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
        self.head = nn.Conv2d(8, 5, 1)
        self.aux = nn.Conv2d(4, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        s = self.stem(x)
        pooled = F.interpolate(self.pooled(s), size=s.shape[-2:], mode="nearest")
        out = self.head(torch.cat([self.wide(s), pooled], dim=1))
        return {"out": out, "aux": self.aux(s)} if self.training else out


def test_trace_shapes_equal_a_manual_forward_pass() -> None:
    torch.manual_seed(0)
    model = Fork().eval()
    x = torch.randn(1, 3, 16, 12)
    taps = ["stem", "wide", ("pooled", "pool"), "head", ("", "logits")]
    nodes = trace_shapes(model, x, taps)
    with torch.no_grad():
        s = model.stem(x)
        manual = [s, model.pooled(s), model.wide(s), model(x), model(x)]
    # in the order the modules run (forward calls the pooled branch first), not as listed
    assert [n.label for n in nodes] == ["stem", "pool", "wide", "head", "logits"]
    assert [(n.channels, n.height, n.width) for n in nodes] == [tuple(t.shape[1:]) for t in manual]
    assert [n.stride for n in nodes] == [2, 16, 2, 2, 2]
    assert not model.training


def test_trace_shapes_in_training_mode_records_training_only_parts_and_keeps_buffers() -> None:
    model = Fork()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8) + 3.0  # a batch that would move BN's running mean
    assert [n.label for n in trace_shapes(model, x, ["aux"])] == []  # eval: aux never runs
    nodes = trace_shapes(model, x, ["aux", ("", "logits")], training=True)
    assert [(n.label, n.channels, n.height) for n in nodes] == [("aux", 5, 4), ("logits", 5, 4)]
    assert not model.training  # mode restored
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched


def test_graph_rows_stack_shared_columns_around_the_main_row() -> None:
    # one node per column sits on row 0; three in one column: 1, 0, -1; a placed node keeps its
    # row and leaves the stack of its column
    assert graph_rows([0, 1, 1, 1, 2]) == [0, 1, 0, -1, 0]
    assert graph_rows([0, 1, 1, 2, 2], rows={4: -3}) == [0, 0.5, -0.5, 0, -3]
    assert graph_rows([0, 0], spacing=2.0) == [1, -1]


def test_draw_graph_draws_one_box_per_node_and_one_arrow_per_edge() -> None:
    nodes = [
        Node("stem", 4, 8, 8, 2),
        Node("a", 6, 8, 8, 2),
        Node("b", 2, 1, 1, 16),
        Node("concat", 8, 8, 8, 2),
        Node("aux", 5, 8, 8, 2),
    ]
    edges = [(0, 1), (0, 2), (1, 3), (2, 3)]
    ax = draw_graph(
        nodes, edges, columns=[0, 1, 1, 2, 1], rows={4: -2}, dashed=[(0, 4)], title="fork"
    )
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == len(nodes) and len(arrows) == len(edges) + 1
    assert [a.get_linestyle() for a in arrows].count("--") == 1
    # boxes centred on their column (1.5 apart) and row; the pooled 1x1 map draws smaller
    xs = [b.get_x() + b.get_width() / 2 for b in boxes]
    ys = [b.get_y() + b.get_height() / 2 for b in boxes]
    assert xs == pytest.approx([0, 1.5, 1.5, 3, 1.5]) and ys == pytest.approx([0, 0.5, -0.5, 0, -2])
    assert boxes[2].get_height() < boxes[1].get_height()
    texts = [t.get_text() for t in ax.texts]
    assert "concat" in texts and "8x8x8" in texts and ax.get_title() == "fork"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["skip"]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="do not exist"):
        draw_graph(nodes, [(0, 5)], columns=[0, 1, 1, 2, 1])
    with pytest.raises(ValueError, match="columns"):
        draw_graph(nodes, edges, columns=[0, 1])


def test_draw_blocks_keeps_every_skip_arc_inside_the_axes() -> None:
    """The longest skip of a U-Net diagram (first block to last decoder stage) arcs highest: the
    y range must hold its top, which starts on a box's top edge, not at its centre."""
    from segtutor.models import build_model
    from segtutor.models.diagram import draw_blocks

    model = build_model("unet", num_classes=5, base_width=4)
    taps = ["inc"] + [f"downs.{i}" for i in range(4)] + [f"ups.{i}" for i in range(4)] + ["head"]
    nodes = trace_shapes(model, torch.zeros(1, 3, 64, 64), taps)
    # arc3 bends in display space, so the figure's shape matters: wide and flat, and narrower
    for figsize, skips in (
        ((12, 4.2), [(3, 5), (2, 6), (1, 7), (0, 8)]),
        ((13, 3.5), [(0, 9)]),
        ((8, 4), [(0, 9), (1, 7)]),
    ):
        fig, ax = plt.subplots(figsize=figsize)
        draw_blocks(nodes, skips=skips, ax=ax, title="a title above the arcs")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        top = ax.get_window_extent(renderer).y1
        arcs = [
            p for p in ax.patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() == "--"
        ]
        assert len(arcs) == len(skips)
        assert max(p.get_window_extent(renderer).y1 for p in arcs) <= top - 2, figsize
        plt.close(fig)
