"""Many small glyphs of a few styles as ONE graphics item: every glyph is a fragment of
one pixmap atlas (a column per style, the symbol pre-rendered at the glyph size), drawn
with a single `drawPixmapFragments` at a constant size in screen pixels.

The pool view used one pyqtgraph ScatterPlotItem per (event kind, fade step): sixteen
items, each paying pyqtgraph's Python paint and bounding-rect queries on every repaint
of the pool (~0.25 ms an item), and a `setData` per frame. Here a frame is one array
assignment and a paint is one call into Qt."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.ScatterPlotItem import renderSymbol
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6.QtCore import QRectF
from PySide6.QtGui import QPainter, QPixmap


class GlyphLayer(pg.GraphicsObject):
    """`styles`: (pyqtgraph symbol name, pen) per style index. `set_glyphs` places glyphs
    at view coordinates, each with its style; `bounds` is the rectangle they can lie in
    (the view's data area: what a change repaints)."""

    def __init__(self, styles: list[tuple[str, object]], size: float, bounds: QRectF):
        super().__init__()
        self.styles = list(styles)
        self._bounds = QRectF(bounds)
        self._size = float(size)
        self._atlas: QPixmap | None = None
        self._cell = 0
        self.x = self.y = np.zeros(0)
        self.style = np.zeros(0, np.int64)
        self._frags = PrimitiveArray(QPainter.PixmapFragment, 10)
        self.setVisible(False)          # hidden while empty: no paint, no bounds queries

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def size(self) -> float:
        return self._size

    def set_bounds(self, bounds: QRectF) -> None:
        if QRectF(bounds) != self._bounds:
            self.prepareGeometryChange()
            self._bounds = QRectF(bounds)

    def set_glyphs(self, x: np.ndarray, y: np.ndarray, style: np.ndarray, size: float | None = None) -> None:
        """Glyphs at (x, y), drawn in style order (a later style over an earlier one)."""
        style = np.asarray(style, np.int64)
        order = np.argsort(style, kind="stable")
        x, y, style = np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order], style[order]
        resized = size is not None and abs(float(size) - self._size) > 1e-6
        if not resized and np.array_equal(x, self.x) and np.array_equal(y, self.y) \
                and np.array_equal(style, self.style):
            return                        # the same glyphs: nothing to repaint
        self.x, self.y, self.style = x, y, style
        if resized:
            self._size = float(size)
            self._atlas = None
        self.setVisible(len(self) > 0)
        self.update()

    def _build_atlas(self) -> None:
        images = [renderSymbol(sym, self._size, pen, pg.mkBrush(None)) for sym, pen in self.styles]
        self._cell = max(max(im.width(), im.height()) for im in images)
        atlas = QPixmap(self._cell * len(images), self._cell)
        atlas.fill(pg.mkColor(0, 0, 0, 0))
        p = QPainter(atlas)
        for i, im in enumerate(images):
            p.drawImage(i * self._cell, 0, im)
        p.end()
        self._atlas = atlas

    def boundingRect(self) -> QRectF:
        return QRectF(self._bounds)

    def paint(self, p: QPainter, *args) -> None:
        if not len(self):
            return
        if self._atlas is None:
            self._build_atlas()
        t = p.transform()
        # the centres in device pixels; the glyphs keep their pixel size at any zoom
        px = t.m11() * self.x + t.m21() * self.y + t.dx()
        py = t.m12() * self.x + t.m22() * self.y + t.dy()
        p.resetTransform()
        n, c = len(self), self._cell
        self._frags.resize(n)
        f = self._frags.ndarray()
        f[:, 0], f[:, 1] = px, py
        f[:, 2], f[:, 3] = self.style * c, 0.0          # source rect in the atlas
        f[:, 4], f[:, 5] = c, c
        f[:, 6:10] = (1.0, 1.0, 0.0, 1.0)               # scale x, y, rotation, opacity
        p.drawPixmapFragments(*self._frags.drawargs(), self._atlas)
