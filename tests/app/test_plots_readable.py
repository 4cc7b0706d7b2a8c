"""Plots a person can read at 1280 wide: round ticks the axis can hold, sane empty
axes, no legend box over the curves, a heatmap whose selection marks never become a
grid and whose colour bar explains the normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from app.serving.selection_data import SelectionView
from app.serving.selection_view import HIT, OUTLINE, heatmap_rgba
from app.widgets import palette as pal
from app.widgets.ticks import compact, nice_ticks, ticks_for_pixels


def test_ticks_are_round_plain_and_few():
    assert [t for _, t in nice_ticks(0, 108, 3)] == ["0", "50", "100"]
    assert [t for _, t in nice_ticks(0, 1234, 2)] == ["0", "1k"]
    assert [v for v, _ in nice_ticks(0, 3.3, 9, integer=True)] == [0, 1, 2, 3]
    assert compact(1_048_576) == "1.05M" and compact(0.25) == "0.25" and compact(12) == "12"
    # a 60 px axis of 12 px text holds two labels, a 300 px one more
    assert len(ticks_for_pixels(0, 100, 60, 12)) == 2
    assert 3 <= len(ticks_for_pixels(0, 100, 300, 12)) <= 11


def _view(P=40, S=30, selected_frac=0.9):
    rng = np.random.default_rng(0)
    sel = rng.random((P, S)) < selected_frac
    oracle = rng.random((P, S)) < 0.2
    return SelectionView((1, 0, 0), "streaming", np.arange(S), rng.random((P, S)).astype(np.float32),
                         sel, oracle, True, np.full(S, P), [0], [0], np.arange(0), np.zeros((0, 1)),
                         np.zeros((0, 1)), np.zeros(0), [0])


@pytest.mark.parametrize("cell", [3, 4, 8])
def test_selection_marks_stay_sparse_at_any_size(cell):
    """A 90%-selected map (the streaming policy) must not turn white."""
    v = _view()
    img = heatmap_rgba(v, cell)
    white = (img[..., :3] == OUTLINE[:3]).all(-1).mean()
    assert white < 0.2
    # selected cells keep their colour, the others are dimmed
    P, S = v.scores.shape
    centre = img[cell - 1::cell, cell - 1::cell, :3].astype(int).sum(-1)   # bottom-right pixel
    is_dot = (img[cell // 2::cell, cell // 2::cell, :3] == HIT[:3]).all(-1)
    assert centre[v.selected & ~is_dot].mean() > centre[~v.selected].mean() / pal.UNSELECTED_DIM * 0.8


@pytest.mark.gui
def test_metric_plots_empty_axes_and_no_legend_boxes(qtbot):
    from app.serving.metrics_view import PLOTS, MetricsView
    m = MetricsView()
    qtbot.addWidget(m)
    m.resize(1280, 260)
    m.show()
    qtbot.waitExposed(m)
    for p, (title, _, series) in zip(m.plots, PLOTS):
        (x0, x1), (y0, y1) = p.vb.viewRange()
        assert x0 >= -1 and x1 <= m.window_s + 1 and y0 == 0 and y1 in (1.0, 100.0)
        assert p.legend is None
        assert title in p.titleLabel.text
        if len(series) > 1:
            assert all(name in p.titleLabel.text for name, _, _ in series)


@pytest.mark.gui
def test_heatmap_has_a_colour_bar_and_says_how_it_is_normalised(qtbot):
    from app.serving.selection_view import NORMALISATION, SelectionViewWidget
    w = SelectionViewWidget()
    qtbot.addWidget(w)
    assert w.colour_bar.values == (0.0, 1.0)
    assert w.norm_note.text() == NORMALISATION and "within its decode step" in NORMALISATION
    assert w.recall.legend is None


@pytest.mark.gui
def test_pool_key_is_painted_from_the_palette(qtbot, tmp_path):
    from PySide6.QtGui import QColor, QImage

    from app.widgets.pool_legend import PoolLegend
    key = PoolLegend()
    qtbot.addWidget(key)
    texts = [t for _, _, t in key.items]
    assert any("owner" in t for t in texts) and any("refcount" in t for t in texts)
    assert {pal.EVENT_SHORT[k] for k in pal.EVENT_GLYPHS} <= set(texts)
    assert key.heightForWidth(300) > key.heightForWidth(1200)       # it wraps
    out = tmp_path / "key.png"
    key.save_png(str(out), 600)
    img = QImage(str(out))
    colours = {QColor(img.pixel(x, y)).getRgb()[:3] for x in range(img.width()) for y in range(img.height())}
    for rgb in pal.OWNER_RGB + (pal.FREE_RGB, pal.CACHED_RGB, pal.REFCOUNT_RGB[-1]):
        assert tuple(rgb) in colours
