"""Live scrolling plots of the engine's per-step metrics against the engine clock.

Rows arrive in batches (all steps since the last frame) into a growing numpy buffer;
each frame redraws only the last `window_s` seconds, so the cost per frame is bounded
however long the run."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QFrame, QGraphicsItem, QGridLayout, QScrollArea, QVBoxLayout, QWidget

from ..widgets import palette as pal
from ..widgets.image_plot import cache_axes, no_si_scale
from ..widgets.ticks import ticks_for_pixels

from .snapshot import COL, METRIC_COLUMNS

_PEN = lambda rgb: pg.mkPen(rgb, width=1.6)
C = pal.SERIES_RGB

# (title, unit, [(series, column, colour)]): short titles so they fit a plot 200 px
# wide at 1280; a plot of two series names them in its title, coloured like their
# curves (a legend box inside the plot would cover them).
PLOTS = (
    ("KV cache used", "%", [("used", "kv_cache_usage_perc", C[0])]),
    ("Throughput", "tok/s", [("all", "tokens_per_s", C[2]), ("output", "gen_tokens_per_s", C[1])]),
    ("Latency", "ms", [("TTFT", "ttft", C[5]), ("TPOT", "tpot", C[4])]),
    ("Requests", "count", [("running", "num_requests_running", C[2]),
                           ("waiting", "num_requests_waiting", C[1])]),
    ("Preemptions", "total", [("preemptions", "num_preemptions", C[5])]),
    ("Prefix hits", "% tokens", [("hit rate", "prefix_hit_rate", C[0])]),
    ("Memory waste", "% slots", [("waste", "memory_waste", C[3])]),
    ("Copy-on-write", "total", [("copies", "num_cow_copies", C[6])]),
    ("Blocks", "count", [("shared", "num_shared_blocks", C[4]), ("cached", "num_cached_free_blocks", C[7])]),
)
COLUMNS = 5  # the dock is wide and short: two rows of five keep every plot readable
_PERCENT = {"kv_cache_usage_perc", "prefix_hit_rate", "memory_waste"}
_COUNTS = {"num_preemptions", "num_cow_copies", "num_requests_running", "num_requests_waiting",
           "num_shared_blocks", "num_cached_free_blocks"}
MIN_PLOT = (170, 80)   # below this the dock scrolls instead of squeezing the plots


def plot_title(title: str, unit: str, series) -> str:
    """One line: a single series is named by the title, two get coloured names."""
    head = f"{title} <span style='color:#9aa'>({unit})</span>"
    if len(series) == 1:
        return head
    return head + ": " + " ".join(f"<span style='color:{pal.rgb_css(rgb)}'>{name}</span>"
                                  for name, _, rgb in series)


class SecondsAxis(pg.AxisItem):
    """Engine-clock ticks that carry their unit ('40 s'): an axis title row would cost
    a short plot its last tick labels."""

    def tickStrings(self, values, scale, spacing):
        return [f"{v * scale:g} s" for v in values]


class MetricsView(QWidget):
    def __init__(self, window_s: float = 30.0, parent=None):
        super().__init__(parent)
        self.window_s = window_s
        self.rows = np.zeros((0, len(METRIC_COLUMNS)))
        self.lat = np.zeros((0, 3))
        self._dirty = False
        self._pending = 0
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        grid = self.grid = QGridLayout(inner)   # the Attach tab re-flows the plots it shows
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(2)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.plots: list[pg.PlotItem] = []
        self.widgets: list[pg.PlotWidget] = []
        self._plot_cols: list[list[str]] = []
        self._turn = 0
        self.cursor_clock: float | None = None    # time travel: the window ends here
        self._shown = (0.0, -1.0)                 # the x range last plotted (none yet)
        self._y_ticks: dict[int, list] = {}       # the y ticks each plot shows
        self._ahead = 0.1                         # share of a new window past the cursor
        # one small view per plot: each repaints alone, so a frame never pays for all nine
        for i, (title, unit, series) in enumerate(PLOTS):
            w = pg.PlotWidget(axisItems={"bottom": SecondsAxis("bottom")})
            w.setMinimumSize(*MIN_PLOT)
            p = w.getPlotItem()
            p.setTitle(plot_title(title, unit, series), size="8pt")
            no_si_scale(p)
            cache_axes(p)
            p.setMenuEnabled(False)
            p.hideButtons()
            # bounded paint cost however many steps are in the window
            p.setClipToView(True)
            p.setDownsampling(auto=True, mode="peak")
            # ranges are set by hand each redraw: cheaper than auto-range, and a flat
            # zero line gets a sane 0..1 axis instead of a +-1e-3 one
            p.enableAutoRange(x=False, y=False)
            cols = []
            for name, col, rgb in series:
                sym = "o" if col in ("ttft", "tpot") else None
                c = p.plot([], [], pen=None if sym else _PEN(rgb), name=name, symbol=sym,
                           symbolSize=4, symbolBrush=rgb if sym else None, symbolPen=None)
                # kept as pixmaps: a time-travel cursor line moving over the plot repaints
                # it without replaying the curves in Python
                for item in (c.curve, c.scatter):
                    item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
                self.curves[col] = c
                cols.append(col)
            grid.addWidget(w, i // COLUMNS, i % COLUMNS)
            self.plots.append(p)
            self.widgets.append(w)
            self._plot_cols.append(cols)
            self._set_ranges(i, 0.0, window_s, 100.0 if set(cols) & _PERCENT else 1.0)

    def reset(self):
        self.rows = np.zeros((0, len(METRIC_COLUMNS)))
        self.lat = np.zeros((0, 3))
        self._dirty = True
        self._shown = (0.0, -1.0)

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
        """Time travel: plot a window holding `clock` (None = the newest). While the
        cursor stays inside the window shown, the plots keep it (a scrub moves only the
        cursor lines): a new window redraws nine plots and their axes. A new window lies
        mostly ahead of the cursor in the direction it left the last one (9/10 of it,
        up to the newest row), so a drag crosses most of a window before the plots move
        again, not one step (a window ending at the cursor moved on every frame)."""
        if clock == self.cursor_clock:
            return
        self.cursor_clock = clock
        x0, x1 = self._shown
        if clock is None:
            self._dirty = True
        elif not x0 <= clock <= x1:
            self._ahead = 0.9 if clock > x1 else 0.1
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
        t_end = t[-1] if self.cursor_clock is None else min(t[-1], self.cursor_clock + self._ahead * self.window_s)
        lo = np.searchsorted(t, t_end - self.window_s)
        win = self.rows[lo:np.searchsorted(t, t_end, side="right")]
        x = win[:, COL["clock"]]
        lw = (self.lat[(self.lat[:, 0] >= t_end - self.window_s) & (self.lat[:, 0] <= t_end)]
              if self.lat.size else self.lat)
        for _ in range(min(todo, self._pending)):
            i = self._turn
            self._turn = (self._turn + 1) % n
            self._pending -= 1
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
            y_top = 100.0 if set(self._plot_cols[i]) & _PERCENT else max(1.0, top) * 1.08
            self._set_ranges(i, max(0.0, t_end - self.window_s), self._x_end(t_end), y_top)
        self._shown = (max(0.0, t_end - self.window_s), self._x_end(t_end))
        return True

    def _x_end(self, t_end: float) -> float:
        """Right edge of the x axis: the newest time once the window is full; before that a
        round ceiling just past it, so a short run (a GPU does a few hundred steps in 2 s of
        engine time) fills the plot instead of a corner of a 30 s axis."""
        if t_end >= self.window_s:
            return t_end
        return next((c for c in (0.5, 1, 2, 5, 10, 20) if c >= t_end * 1.05), self.window_s)

    def _set_ranges(self, i: int, x0: float, x1: float, y_top: float) -> None:
        """Both ranges by hand, with y ticks the plot's height can hold: pyqtgraph's own
        stack their labels on a 60 px axis and turn an empty plot into -400..400 x0.001."""
        p = self.plots[i]
        p.setXRange(x0, x1, padding=0.01)
        p.setYRange(0.0, y_top, padding=0)
        p.vb.updateMatrix()   # now: deferred to the paint, it would ask for a second paint
        ax = p.getAxis("left")
        fm = QFontMetrics(ax.style.get("tickFont") or self.font())
        h = p.vb.height() if p.vb.height() > 10 else MIN_PLOT[1] - 50
        integer = set(self._plot_cols[i]) <= _COUNTS
        ticks = ticks_for_pixels(0.0, y_top, h, fm.height(), integer)
        if ticks != self._y_ticks.get(i):   # new ticks redraw the axis: only on a change
            self._y_ticks[i] = ticks
            ax.setTicks([ticks, []])
            ax.setWidth(max(fm.horizontalAdvance(t) for _, t in ticks) + 10)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._dirty = self._dirty or bool(self.rows.size)   # ticks follow the new height
        if not self.rows.size:
            for i, cols in enumerate(self._plot_cols):
                self._set_ranges(i, 0.0, self.window_s, 100.0 if set(cols) & _PERCENT else 1.0)

    def series(self, col: str) -> np.ndarray:
        return self.rows[:, COL[col]]
