"""Live scrolling plots of the engine's per-step metrics against the engine clock.

Rows arrive in batches (all steps since the last frame) into a growing numpy buffer;
each frame redraws only the last `window_s` seconds, so the cost per frame is bounded
however long the run."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from .snapshot import COL, METRIC_COLUMNS

_PEN = lambda rgb, style=None: pg.mkPen(rgb, width=1.6, style=style) if style else pg.mkPen(rgb, width=1.6)

# (title, y label, [(series, column or special, colour)])
PLOTS = (
    ("KV cache usage", "%", [("used", "kv_cache_usage_perc", (90, 200, 255))]),
    ("Throughput", "tokens/s", [("all", "tokens_per_s", (120, 230, 120)),
                                ("generated", "gen_tokens_per_s", (240, 200, 80))]),
    ("Latency", "ms", [("TTFT", "ttft", (255, 130, 90)), ("TPOT", "tpot", (200, 140, 255))]),
    ("Requests", "count", [("running", "num_requests_running", (120, 230, 120)),
                           ("waiting", "num_requests_waiting", (255, 170, 60))]),
    ("Preemptions", "cumulative", [("preemptions", "num_preemptions", (255, 90, 90))]),
    ("Prefix-cache hit rate", "% of queried tokens", [("hit rate", "prefix_hit_rate", (110, 255, 255))]),
    ("Memory waste", "% of allocated slots", [("waste", "memory_waste", (220, 220, 120))]),
    ("Copy-on-write", "cumulative copies", [("CoW", "num_cow_copies", (110, 255, 255))]),
    ("Shared / cached-free blocks", "blocks", [("shared", "num_shared_blocks", (230, 200, 70)),
                                              ("cached-free", "num_cached_free_blocks", (100, 140, 170))]),
)
_PERCENT = {"kv_cache_usage_perc", "prefix_hit_rate", "memory_waste"}


class MetricsView(QWidget):
    def __init__(self, window_s: float = 30.0, parent=None):
        super().__init__(parent)
        self.window_s = window_s
        self.rows = np.zeros((0, len(METRIC_COLUMNS)))
        self.lat = np.zeros((0, 3))
        self._dirty = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.glw = pg.GraphicsLayoutWidget()
        lay.addWidget(self.glw)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.plots = []
        rows = -(-len(PLOTS) // 3)
        for i, (title, ylab, series) in enumerate(PLOTS):
            p = self.glw.addPlot(row=i // 3, col=i % 3, title=title)
            p.setLabel("left", ylab)
            # one shared, scrolling time axis: only the bottom row draws it, since
            # re-laying out tick labels is most of what a scrolling plot costs
            if i // 3 == rows - 1:
                p.setLabel("bottom", "engine time", units="s")
            else:
                p.hideAxis("bottom")
            if self.plots:
                p.setXLink(self.plots[0])
            p.showGrid(x=True, y=True, alpha=0.25)
            p.setMenuEnabled(False)
            p.setClipToView(True)
            if any(col in _PERCENT for _, col, _ in series):
                p.setYRange(0, 100, padding=0.02)
                p.enableAutoRange(y=False)
            if len(series) > 1:
                p.addLegend(offset=(5, 5), labelTextSize="8pt")
            for name, col, rgb in series:
                sym = "o" if col in ("ttft", "tpot") else None
                c = p.plot([], [], pen=None if sym else _PEN(rgb), name=name, symbol=sym,
                           symbolSize=4, symbolBrush=rgb if sym else None, symbolPen=None)
                self.curves[col] = c
            self.plots.append(p)

    def reset(self):
        self.rows = np.zeros((0, len(METRIC_COLUMNS)))
        self.lat = np.zeros((0, 3))
        self._dirty = True

    def add(self, rows: np.ndarray, latencies: np.ndarray) -> None:
        if rows.size:
            if self.rows.size and rows[0, COL["clock"]] < self.rows[-1, COL["clock"]]:
                self.reset()   # a new engine: its clock starts again
            self.rows = np.concatenate([self.rows, rows])
            self._dirty = True
        if latencies.size:
            self.lat = np.concatenate([self.lat, latencies])
            self._dirty = True
        # bounded memory over long runs; plots only show the window anyway
        if self.rows.shape[0] > 200_000:
            self.rows = self.rows[-100_000:]

    def render(self) -> bool:
        if not self._dirty or not self.rows.size:
            return False
        t = self.rows[:, COL["clock"]]
        t_end = t[-1]
        lo = np.searchsorted(t, t_end - self.window_s)
        win = self.rows[lo:]
        x = win[:, COL["clock"]]
        for col, curve in self.curves.items():
            if col in ("ttft", "tpot"):
                continue
            y = win[:, COL[col]]
            if col in _PERCENT:
                y = y * 100.0
            if col == "prefix_hit_rate":
                keep = ~np.isnan(y)
                curve.setData(x[keep], y[keep])
            else:
                curve.setData(x, y)
        if self.lat.size:
            lw = self.lat[self.lat[:, 0] >= t_end - self.window_s]
            for j, col in ((1, "ttft"), (2, "tpot")):
                keep = ~np.isnan(lw[:, j])
                self.curves[col].setData(lw[keep, 0], lw[keep, j] * 1000.0)
        self._dirty = False
        return True

    def series(self, col: str) -> np.ndarray:
        return self.rows[:, COL[col]]
