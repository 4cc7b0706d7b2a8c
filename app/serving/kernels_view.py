"""Kernels view: which backend runs the ops (and why), the time each kernel family
takes per engine step, from StepRecord.op_timings_s (CUDA events on a GPU, wall
clock on the CPU reference), and the bandwidth it achieved: StepRecord.op_bytes (the
fewest bytes the family must move) over that time.

On a GPU decode steps replay CUDA graphs while profiling: such a step is timed whole
("total", a line through every step) and every `profile_every`-th step runs eagerly to
sample the per-family breakdown (markers at the sampled steps); the table shows the
breakdown of the last sampled step and names it."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..widgets import palette as pal
from ..widgets.image_plot import no_si_scale
from ..widgets.legend import flexible
from tinyserve_core.kernels import backend_info

COLOURS = pal.SERIES_RGB


def backend_text(info: dict) -> str:
    if info.get("backend") == "cuda":
        return f"Kernels: CUDA extension on {info.get('gpu')}"
    why = info.get("reason") or "no reason given"
    gpu = f" (GPU present: {info['gpu']})" if info.get("gpu") else ""
    return f"Kernels: {info.get('backend')} — torch reference ops, because: {why}{gpu}"


class KernelsView(QWidget):
    def __init__(self, history: int = 600, parent=None):
        super().__init__(parent)
        self.history = history
        self.t: list[float] = []
        self.ops: dict[str, list[float]] = {}
        self.bandwidth: dict[str, float] = {}   # op -> GB/s of the newest step that moved bytes
        self.sampled: tuple | None = None       # (clock, step or None) of the newest breakdown
        self.whole_only = 0                     # steps timed whole (graph replays) in view
        self._dirty = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.backend = QLabel(backend_text(backend_info()))
        flexible(self.backend)
        self.backend.setWordWrap(True)
        lay.addWidget(self.backend)
        self.glw = pg.GraphicsLayoutWidget()
        # the table below is the legend (a swatch per family): a legend box would sit on the curves
        self.plot = self.glw.addPlot(title="ms per engine step, by kernel family")
        self.plot.setLabel("bottom", "engine time", units="s")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        no_si_scale(self.plot)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.colours: dict[str, tuple] = {}
        lay.addWidget(self.glw, 1)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["kernel family", "last step ms", "mean ms",
                                              "share", "GB/s"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeaderItem(4).setToolTip(
            "achieved bandwidth of the newest step: the fewest bytes the family must move / its time")
        self.table.setMaximumHeight(170)
        lay.addWidget(self.table)
        self.note = QLabel("")
        flexible(self.note)
        lay.addWidget(self.note)

    def set_backend(self, info: dict):
        self.backend.setText(backend_text(info))

    def reset(self):
        self.t.clear()
        self.bandwidth.clear()
        self.sampled, self.whole_only = None, 0
        for v in self.ops.values():
            v.clear()
        self._dirty = True

    def add(self, timings: list[tuple]) -> None:
        """(engine clock, op -> s, op -> bytes[, engine step]) per profiled step."""
        for clock, d, *rest in timings:
            moved = rest[0] if rest else {}
            if any(k != "total" for k in d):
                self.sampled = (clock, rest[1] if len(rest) > 1 else None)
            else:
                self.whole_only += 1
            for k, b in moved.items():
                if d.get(k, 0.0) > 0:
                    self.bandwidth[k] = b / d[k] / 1e9
            n = len(self.t)
            self.t.append(clock)
            for k, s in d.items():
                col = self.ops.get(k)
                if col is None:
                    col = self.ops[k] = [np.nan] * n
                col.append(s)
            for k, col in self.ops.items():
                if len(col) < n + 1:
                    col.append(np.nan)
            self._dirty = True
        if len(self.t) > self.history:
            cut = len(self.t) - self.history
            del self.t[:cut]
            for col in self.ops.values():
                del col[:cut]

    def render(self) -> bool:
        if not self._dirty:
            return False
        self._dirty = False
        if not self.t:
            self.note.setText("No kernel timings yet: they appear once the engine steps "
                              "(the model runner reports them per step).")
            return True
        t = np.asarray(self.t)
        # shares of the summed families; "total" (the whole forward) is their container
        total_mean = sum(np.nanmean(c) for k, c in self.ops.items()
                         if k != "total" and np.isfinite(c).any()) or 1.0
        self.table.setRowCount(len(self.ops))
        for i, (k, col) in enumerate(sorted(self.ops.items())):
            y = np.asarray(col) * 1000.0
            c = self.curves.get(k)
            if c is None:
                colour = COLOURS[len(self.curves) % len(COLOURS)]
                self.colours[k] = colour
                if k == "total":   # every step, replayed graphs included: a line
                    c = self.plot.plot([], [], pen=pg.mkPen(colour, width=1.6), name="total (every step)")
                else:              # the sampled breakdowns: markers, no line across the gaps
                    c = self.plot.plot([], [], pen=None, symbol="o", symbolSize=5, symbolBrush=colour,
                                       symbolPen=None, name=k)
                self.curves[k] = c
            keep = np.isfinite(y)
            c.setData(t[keep], y[keep])
            mean = float(np.nanmean(y)) if keep.any() else float("nan")
            last = y[keep][-1] if keep.any() else float("nan")
            share = "-" if k == "total" else f"{100 * mean / 1000.0 / total_mean:.1f}%"
            bw = self.bandwidth.get(k)
            bw_txt = f"{bw:.1f}" if bw is not None else "-"
            for j, txt in enumerate(("\u25a0 " + k, f"{last:.3f}", f"{mean:.3f}", share, bw_txt)):
                self.table.setItem(i, j, QTableWidgetItem(txt))
            # the swatch in the name column is the curve's colour (the plot has no legend)
            self.table.item(i, 0).setForeground(QColor(*self.colours[k]))
        self.note.setText(self._note_text())
        return True

    def _note_text(self) -> str:
        text = f"{len(self.t)} steps in view"
        if self.whole_only:
            text += f"; {self.whole_only} replayed as CUDA graphs, timed whole (total)"
        if self.sampled is not None and self.whole_only:
            clock, step = self.sampled
            where = f"step {step}" if step is not None else f"the step at engine time {clock:.3f} s"
            text += f"; family rows: breakdown sampled eagerly at {where}"
        return text
