"""segtutor.viz against independent references (F.one_hot, hand-made blends)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segtutor import viz


def test_palette_background_black_and_distinct():
    colours = viz.palette(12)
    assert colours.shape == (12, 3)
    assert np.allclose(colours[0], 0)
    assert len({tuple(np.round(c, 6)) for c in colours}) == 12
    with pytest.raises(ValueError, match="num_classes"):
        viz.palette(0)


def test_one_hot_planes_match_torch_one_hot_and_ignore():
    labels = torch.randint(0, 4, (7, 9))
    labels[0, :3] = 255
    planes = viz.one_hot_planes(labels, 4)
    ref = F.one_hot(labels.clamp(max=3), 4).permute(2, 0, 1).numpy()
    valid = (labels != 255).numpy()
    assert planes.shape == (4, 7, 9)
    assert np.array_equal(planes[:, valid], ref[:, valid])
    assert planes[:, ~valid].sum() == 0
    with pytest.raises(ValueError, match="labels must lie"):
        viz.one_hot_planes(torch.full((2, 2), 5), 4)


def test_colorize_uses_palette_and_white_for_ignore():
    labels = np.array([[0, 1], [2, 255]])
    rgb = viz.colorize(labels, 3)
    pal = viz.palette(3)
    assert np.allclose(rgb[0, 0], pal[0]) and np.allclose(rgb[0, 1], pal[1])
    assert np.allclose(rgb[1, 0], pal[2]) and np.allclose(rgb[1, 1], 1.0)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        viz.colorize(np.zeros((2, 2, 2)))


def test_overlay_blends_only_foreground():
    image = np.full((4, 4), 128, dtype=np.uint8)  # grey uint8 -> 0.502 float
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[1, 1] = 1
    mask[2, 2] = 255
    out = viz.overlay(image, mask, alpha=0.5, color=(1.0, 0.0, 0.0))
    grey = 128 / 255
    assert out.shape == (4, 4, 3)
    assert np.allclose(out[1, 1], [0.5 * grey + 0.5, 0.5 * grey, 0.5 * grey])
    assert np.allclose(out[0, 0], grey) and np.allclose(out[2, 2], grey)  # background, ignore
    chw = torch.rand(3, 4, 4)
    assert np.allclose(viz.overlay(chw, np.zeros((4, 4)), 0.3), chw.permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="does not match"):
        viz.overlay(image, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(image, mask, alpha=1.5)


def test_mask_grid_and_show_one_hot_build_figures():
    images = torch.rand(3, 3, 8, 8)
    masks = torch.randint(0, 3, (3, 8, 8))
    fig = viz.mask_grid(images, masks, preds=masks, titles=["a", "b", "c"])
    assert len(fig.axes) == 9
    assert fig.axes[0].get_title() == "a"
    fig2 = viz.show_one_hot(masks[0], 3)
    assert len(fig2.axes) == 4
    with pytest.raises(ValueError, match="same number"):
        viz.mask_grid(images, masks[:1])
    plt.close("all")


def test_plot_curves_groups_train_and_val():
    rows = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_mean_iou": 0.3},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.8, "val_mean_iou": 0.5},
    ]
    fig = viz.plot_curves(rows)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "mean_iou"]
    assert len(fig.axes[0].get_lines()) == 2
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [0.3, 0.5]
    with pytest.raises(ValueError, match="no key"):
        viz.plot_curves(rows, keys=["nope"])
    with pytest.raises(TypeError):
        viz.plot_curves(42)


def test_interactive_demo_is_built_in_jupyter_and_replaced_by_a_note_in_the_book(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    calls = []

    def build():
        calls.append(1)
        return "the widget"

    monkeypatch.delenv("SEGTUTOR_BOOK_BUILD", raising=False)
    viz.interactive(build, "a slider")
    assert calls == [1] and shown == ["the widget"]

    monkeypatch.setenv("SEGTUTOR_BOOK_BUILD", "1")
    viz.interactive(build, "a slider")
    assert calls == [1]  # not built: no widget state ends up in the static page
    assert isinstance(shown[-1], IPython.display.Markdown)
    assert "In Jupyter, this cell shows a slider" in shown[-1].data
