"""Live scrolling plots of the engine's per-step metrics against the engine clock.

Rows arrive in batches (all steps since the last frame) into a growing numpy buffer;
each frame redraws only the last `window_s` seconds, so the cost per frame is bounded
however long the run."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QWidget

from .snapshot import COL, METRIC_COLUMNS

_PEN = lambda rgb, style=None: pg.mkPen(rgb, width=1.6, style=style) if style else pg.mkPen(rgb, width=1.6)

# (title, unit, [(series, column or special, colour)]); the unit goes into the title: a
# rotated axis label would eat a short plot's height and get clipped.
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
COLUMNS = 5  # the dock is wide and short: two rows of five keep every plot readable
_PERCENT = {"kv_cache_usage_perc", "prefix_hit_rate", "memory_waste"}


class MetricsView(QWidget):
    def __init__(self, window_s: float = 30.0, parent=None):
        super().__init__(parent)
        self.window_s = window_s
        self.rows = np.zeros((0, len(METRIC_COLUMNS)))
        self.lat = np.zeros((0, 3))
        self._dirty = False
        self._pending = 0
        grid = QGridLayout(self)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(2)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.plots: list[pg.PlotItem] = []
        self.widgets: list[pg.PlotWidget] = []
        self._plot_cols: list[list[str]] = []
        self._turn = 0
        self.cursor_clock: float | None = None    # time travel: the window ends here
        rows = -(-len(PLOTS) // COLUMNS)
        # one small view per plot: each repaints alone, so a frame never pays for all nine
        for i, (title, unit, series) in enumerate(PLOTS):
            w = pg.PlotWidget()
            w.setMinimumSize(160, 90)
            p = w.getPlotItem()
            p.setTitle(f"{title} <span style='color:#9aa'>({unit})</span>", size="9pt")
            p.getAxis("left").setTickDensity(0.6)  # a short axis: fewer, unclipped tick labels
            p.getAxis("left").setWidth(34)
            if i // COLUMNS == rows - 1:
                p.setLabel("bottom", "engine time", units="s")
            p.setMenuEnabled(False)
            p.hideButtons()
            # bounded paint cost however many steps are in the window
            p.setClipToView(True)
            p.setDownsampling(auto=True, mode="peak")
            # ranges are set by hand each redraw: cheaper than auto-range, and a flat
            # zero line gets a sane 0..1 axis instead of a +-1e-3 one
            p.enableAutoRange(x=False, y=False)
            if any(col in _PERCENT for _, col, _ in series):
                p.setYRange(0, 100, padding=0.02)
            if len(series) > 1:
                p.addLegend(offset=(5, 2), labelTextSize="7pt", verSpacing=-6)
            cols = []
            for name, col, rgb in series:
                sym = "o" if col in ("ttft", "tpot") else None
                c = p.plot([], [], pen=None if sym else _PEN(rgb), name=name, symbol=sym,
                           symbolSize=4, symbolBrush=rgb if sym else None, symbolPen=None)
                self.curves[col] = c
                cols.append(col)
            grid.addWidget(w, i // COLUMNS, i % COLUMNS)
            self.plots.append(p)
            self.widgets.append(w)
            self._plot_cols.append(cols)

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

    def set_cursor(self, clock: float | None) -> None:
        """Time travel: plot the window that ends at `clock` (None = the newest)."""
        if clock != self.cursor_clock:
            self.cursor_clock = clock
            self._dirty = True

    def render(self, plots: int | None = None) -> bool:
        """Redraw the next `plots` plots (all by default) from the newest window."""
        if not self.rows.size:
            return False
        n = len(self.plots)
        todo = n if plots is None else min(plots, n)
        if not self._dirty and self._pending == 0:
            return False
        if self._dirty:
            self._pending = n      # every plot owes one redraw for the new rows
            self._dirty = False
        t = self.rows[:, COL["clock"]]
        t_end = t[-1] if self.cursor_clock is None else min(t[-1], self.cursor_clock)
        lo = np.searchsorted(t, t_end - self.window_s)
        win = self.rows[lo:np.searchsorted(t, t_end, side="right")]
        x = win[:, COL["clock"]]
        lw = (self.lat[(self.lat[:, 0] >= t_end - self.window_s) & (self.lat[:, 0] <= t_end)]
              if self.lat.size else self.lat)
        for _ in range(min(todo, self._pending)):
            i = self._turn
            self._turn = (self._turn + 1) % n
            self._pending -= 1
            self.plots[i].setXRange(max(0.0, t_end - self.window_s), t_end, padding=0.01)
            top = 0.0
            for col in self._plot_cols[i]:
                curve = self.curves[col]
                if col in ("ttft", "tpot"):
                    if lw.size:
                        j = 1 if col == "ttft" else 2
                        keep = ~np.isnan(lw[:, j])
                        curve.setData(lw[keep, 0], lw[keep, j] * 1000.0)
                        if keep.any():
                            top = max(top, float(lw[keep, j].max()) * 1000.0)
                    continue
                y = win[:, COL[col]]
                if col in _PERCENT:
                    y = y * 100.0
                keep = ~np.isnan(y)
                curve.setData(x[keep], y[keep])
                if keep.any():
                    top = max(top, float(y[keep].max()))
            if not any(c in _PERCENT for c in self._plot_cols[i]):
                self.plots[i].setYRange(0, max(1.0, top) * 1.08, padding=0)
        return True

    def series(self, col: str) -> np.ndarray:
        return self.rows[:, COL[col]]
