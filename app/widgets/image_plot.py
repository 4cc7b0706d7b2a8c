"""The dark plot canvas the serving views draw on, and the image plot most of them
are: rows top-down, no context menu, one row-major ImageItem set whole each frame."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem

from .palette import BACKGROUND_RGB as BACKGROUND


def dark_canvas() -> pg.GraphicsLayoutWidget:
    glw = pg.GraphicsLayoutWidget()
    glw.setBackground(BACKGROUND)
    return glw


def no_si_scale(plot: pg.PlotItem) -> None:
    """Plain numbers on every axis: pyqtgraph's automatic SI scaling writes '(x0.001)'
    into an empty plot's axis title."""
    for name in ("left", "bottom", "right", "top"):
        ax = plot.getAxis(name)
        if ax is not None:
            ax.enableAutoSIPrefix(False)


def cache_axes(plot: pg.PlotItem) -> None:
    """Each axis kept as a pixmap, redrawn only when its ticks or size change: a view
    whose data changes every frame (a time-travel scrub) would otherwise replay every
    axis it touches in Python on each paint (~0.3 ms an axis)."""
    for name in ("left", "bottom", "right", "top"):
        ax = plot.getAxis(name)
        if ax is not None:
            ax.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


def add_image_plot(glw: pg.GraphicsLayoutWidget, left: str, bottom: str,
                   **where) -> tuple[pg.PlotItem, pg.ImageItem]:
    """A plot of `glw` (`where`: addPlot's row/col/colspan/title) holding one image whose
    row 0 is drawn at the top, with its axes named."""
    plot = glw.addPlot(**where)
    plot.invertY(True)
    plot.setMenuEnabled(False)
    plot.setLabel("left", left)
    plot.setLabel("bottom", bottom)
    no_si_scale(plot)
    # empty: a sane frame, not +-0.001; the image refits it (auto-range) once it arrives
    plot.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)
    plot.enableAutoRange()
    image = pg.ImageItem(axisOrder="row-major")
    plot.addItem(image)
    return plot, image


class IndexedImageItem(pg.GraphicsObject):
    """A palette-index image drawn over the rectangle (0, 0, width, height) in view
    units: indices -> 0xAARRGGBB through a uint32 table in one numpy `take`, wrapped
    as an ARGB32_Premultiplied QImage, the one format Qt's raster engine scales
    without converting it first. (pyqtgraph's ImageItem hands Qt an RGBX8888 image,
    which is converted on every paint, on several threads, once it is large.)"""

    def __init__(self):
        super().__init__()
        self._qimage = None
        self._pixels = None
        self._table = None
        self._rect = QRectF(0, 0, 1, 1)

    @staticmethod
    def argb_table(lut_rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(lut_rgb, np.uint32)
        return (0xFF000000 | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32)

    def set_indices(self, index_image: np.ndarray, table: np.ndarray, width: float, height: float) -> None:
        self.prepareGeometryChange()
        px = np.ascontiguousarray(table[index_image])
        h, w = px.shape
        self._pixels = px              # the QImage borrows this buffer
        self._table = table
        self._qimage = QImage(px.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        self._rect = QRectF(0, 0, width, height)
        self.update()

    def update_pixels(self, rows: np.ndarray, cols: np.ndarray, indices: np.ndarray) -> None:
        """Repaint some pixels (palette indices at (rows, cols)) in the buffer the QImage
        already wraps: no new image, the cost is the pixels changed."""
        if self._pixels is None or self._table is None:
            raise RuntimeError("update_pixels before set_indices")
        self._pixels[rows, cols] = self._table[indices]
        self.update()

    def pixels(self) -> np.ndarray | None:
        return self._pixels

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(self, p: QPainter, *args) -> None:
        if self._qimage is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(self._rect, self._qimage)
