"""The pool's event glyphs drawn as one atlas item: each glyph where it belongs, in its
style, at its pixel size whatever the zoom, and nothing repainted for the same glyphs."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF, QRectF

pytestmark = pytest.mark.gui


def _view(qapp):
    from app.widgets.glyph_layer import GlyphLayer
    w = pg.PlotWidget()
    w.setBackground((0, 0, 0))
    w.resize(300, 300)
    p = w.getPlotItem()
    p.hideAxis("left")
    p.hideAxis("bottom")
    p.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)
    layer = GlyphLayer([("o", pg.mkPen((255, 0, 0), width=2)), ("s", pg.mkPen((0, 255, 0), width=2))],
                       12.0, QRectF(0, 0, 10, 10))
    p.addItem(layer)
    w.show()
    qapp.processEvents()
    return w, layer


def _colour_near(w, layer, x, y, r=8):
    # a paint first: the view box applies a range change to its matrix when it prepares a paint,
    # so without one (a window not yet exposed, the offscreen platform under load) the mapping
    # below would be the old range's
    w.grab()
    pt = w.mapFromScene(layer.mapToScene(QPointF(x, y)))
    img = w.grab().toImage()
    px = [img.pixelColor(pt.x() + dx, pt.y() + dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1)]
    return {(c.red() > 128, c.green() > 128) for c in px}


def test_each_glyph_is_drawn_where_it_is_in_its_style(qapp):
    w, layer = _view(qapp)
    assert not layer.isVisible()
    layer.set_glyphs(np.array([7.5, 2.5]), np.array([7.5, 2.5]), np.array([1, 0]))
    qapp.processEvents()
    assert len(layer) == 2 and list(layer.style) == [0, 1]        # drawn in style order
    assert (True, False) in _colour_near(w, layer, 2.5, 2.5)       # red circle
    assert (False, True) in _colour_near(w, layer, 7.5, 7.5)       # green square
    assert _colour_near(w, layer, 5.0, 5.0, r=3) == {(False, False)}
    # a zoom keeps the glyph's pixel size: the atlas is not scaled with the view
    w.getPlotItem().setRange(xRange=(2, 3), yRange=(2, 3), padding=0)
    qapp.processEvents()
    near = _colour_near(w, layer, 2.5, 2.5, r=20)
    assert (True, False) in near
    layer.set_glyphs(np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
    assert not layer.isVisible() and len(layer) == 0


def test_the_same_glyphs_ask_for_no_repaint(qapp):
    w, layer = _view(qapp)
    x, y, s = np.array([1.5, 4.5]), np.array([1.5, 4.5]), np.array([0, 1])
    layer.set_glyphs(x, y, s)
    asked = []
    layer.update = lambda *a: asked.append(a)
    layer.set_glyphs(x.copy(), y.copy(), s.copy())
    assert asked == []
    layer.set_glyphs(x, y + 1, s)
    assert len(asked) == 1
    layer.set_glyphs(x, y + 1, s, size=16.0)          # a new size redraws the atlas
    assert len(asked) == 2 and layer.size == 16.0
