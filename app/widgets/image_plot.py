"""The dark plot canvas the serving views draw on, and the image plot most of them
are: rows top-down, no context menu, one row-major ImageItem set whole each frame."""

from __future__ import annotations

import pyqtgraph as pg

BACKGROUND = (18, 18, 22)


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
    plot.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)   # empty: a sane frame, not +-0.001
    image = pg.ImageItem(axisOrder="row-major")
    plot.addItem(image)
    return plot, image
