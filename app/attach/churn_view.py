"""Churn of a server's cache over its own clock: blocks stored, removed (evictions)
and cleared per second, and the live blocks at the end of each second. Units in the
titles, legends outside the data, as the serving metric plots."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QWidget

from tinyserve_core.attach.cache_views import Churn

SERIES = (("stored", (0, 158, 115)), ("removed (evicted)", (213, 94, 0)), ("cleared", (204, 121, 167)))
LIVE_RGB = (86, 180, 233)


def _key(series) -> str:
    """The legend in the title, outside the data."""
    return " ".join(f"<span style='color:rgb{rgb}'>&#9644; {name}</span>" for name, rgb in series)


def _plot(title: str, unit: str, series) -> tuple[pg.PlotWidget, pg.PlotItem]:
    w = pg.PlotWidget()
    w.setMinimumSize(160, 90)
    p = w.getPlotItem()
    p.setTitle(f"{title} <span style='color:#9aa'>({unit})</span><br>{_key(series)}", size="9pt")
    p.setLabel("bottom", "server time", units="s")
    p.getAxis("left").setWidth(44)
    p.setMenuEnabled(False)
    p.hideButtons()
    return w, p


class ChurnView(QWidget):
    def __init__(self, window_s: float = 120.0, parent=None):
        super().__init__(parent)
        self.window_s = window_s
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        w1, self.rate_plot = _plot("Block events", "blocks/s", SERIES)
        # in a full cache removed runs on top of stored: stored is drawn wide beneath,
        # removed thin and dashed over it, so both stay visible
        pens = {"stored": pg.mkPen(SERIES[0][1], width=3.5),
                "removed (evicted)": pg.mkPen(SERIES[1][1], width=1.4, style=Qt.PenStyle.DashLine),
                "cleared": pg.mkPen(SERIES[2][1], width=1.6)}
        self.curves = {name: self.rate_plot.plot([], [], pen=pens[name], stepMode="center")
                       for name, _ in SERIES}
        w2, self.live_plot = _plot("Live blocks", "blocks", (("live, end of each second", LIVE_RGB),))
        self.live_curve = self.live_plot.plot([], [], pen=pg.mkPen(LIVE_RGB, width=1.6),
                                              connect="finite", symbol="o", symbolSize=3,
                                              symbolBrush=LIVE_RGB, symbolPen=None)
        lay.addWidget(w1, 1)
        lay.addWidget(w2, 1)
        self.last: Churn | None = None

    def set_churn(self, c: Churn) -> None:
        self.last = c
        if c.t.size == 0:
            return
        keep = c.t >= c.t[-1] - self.window_s
        t = c.t[keep] - c.t[0]
        edges = np.append(t, t[-1] + 1.0) if t.size else t
        for (name, _), y in zip(SERIES, (c.stored, c.removed, c.cleared)):
            self.curves[name].setData(edges, y[keep])
        self.live_curve.setData(t + 1.0, c.live[keep])   # live at the end of each second
