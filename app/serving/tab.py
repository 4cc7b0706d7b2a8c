"""The Serving tab: a QMainWindow of its own so that its views are docks the user can
rearrange, around the block pool. It owns the engine worker and the frame timer that
pulls the newest snapshot (never one signal per engine event)."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QTextBrowser, QVBoxLayout, QWidget)

from ..widgets.legend import flexible
from tinyserve_core.engine.config import EngineConfig

from ..workers import EngineWorker, default_simulation_factory
from .controls import ControlsPanel
from .kernels_view import KernelsView
from .metrics_view import MetricsView
from .pool_view import BlockPoolView
from .selection_view import SelectionViewWidget
from .summary import config_summary, summary_line
from .tables_view import BlockTablesView
from .time_travel import TimeTravel

FRAME_MS = 25          # 40 Hz: the pool animates at this rate
# Plots redraw in turns, one small piece per turn (3 metric plots, the kernels view,
# the selection view), so no frame repaints every dock: each plot refreshes ~3 Hz.
PLOT_TURN_S = 0.05


class ServingTab(QMainWindow):
    status_message = Signal(str, int)        # text, timeout ms (0 = until replaced)
    error_shown = Signal(str, str)

    def __init__(self, config: EngineConfig, factory=default_simulation_factory,
                 engine_mode: str = "process", parent=None):
        super().__init__(parent)
        self.setObjectName("serving")
        self.setDockNestingEnabled(True)
        self.last_error: tuple[str, str] | None = None
        self.show_error_dialogs = True
        self._clicked_block = -1

        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(2, 2, 2, 2)
        self.summary = QLabel(summary_line(config_summary(config)))
        flexible(self.summary)
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("font-weight: bold;")
        v.addWidget(self.summary)
        self.loading = QProgressBar()
        self.loading.setRange(0, 0)
        self.loading.setFormat("Loading the model and building the KV pool...")
        self.loading.setTextVisible(True)
        v.addWidget(self.loading)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("workload %p% done")
        v.addWidget(self.progress)
        self.pool_view = BlockPoolView()
        v.addWidget(self.pool_view, 1)
        self.setCentralWidget(central)

        self.controls = ControlsPanel(config)
        self.tables_view = BlockTablesView()
        self.metrics_view = MetricsView()
        self.selection_view = SelectionViewWidget()
        self.kernels_view = KernelsView()
        self.details = QTextBrowser()
        self.details.setPlaceholderText("Click a block in the pool to see its details here.")
        self.docks: dict[str, QDockWidget] = {}
        L, R, B = (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea,
                   Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Controls", self.controls, L)
        self._dock("Cache selection", self.selection_view, R)
        self._dock("Kernels", self.kernels_view, R)
        self._dock("Block details", self.details, R)
        self._dock("Metrics", self.metrics_view, B)
        self._dock("Block tables", self.tables_view, B)
        self.time_travel = TimeTravel(self)   # timeline, event log dock, story caption
        self._sized = False
        self.layout_restored = False   # set when QSettings gave back the user's layout

        self.worker = EngineWorker(config, factory, mode=engine_mode)
        self.worker.ready.connect(self._on_ready)
        self.worker.failed.connect(self._on_failed)
        self.worker.state_changed.connect(self._on_state)
        c = self.controls
        c.start_clicked.connect(self.worker.start_engine)
        c.pause_clicked.connect(self.worker.pause)
        c.step_clicked.connect(self.worker.step_once)
        c.reset_clicked.connect(lambda: self.restart(c.config))
        c.speed_changed.connect(self.worker.set_speed)
        c.live_change.connect(self._live_change)
        c.restart_requested.connect(self.restart)
        self.pool_view.block_hovered.connect(self.worker.request_block_info)
        self.pool_view.block_clicked.connect(self._on_block_clicked)
        self.selection_view.key_changed.connect(self.worker.set_selection_key)
        self.snapshots = 0
        self._plots_t = 0.0
        self._plot_turn = 0
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.timeout.connect(self.frame)
        self.worker.start()
        self.timer.start()

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{title.replace(' ', '_').lower()}")
        d.setWidget(widget)
        self.addDockWidget(area, d)
        self.docks[title] = d
        return d

    def showEvent(self, ev):
        super().showEvent(ev)
        if not self._sized:   # dock sizes only stick once the window has a size
            self._sized = True
            if self.layout_restored:
                return
            QTimer.singleShot(0, self.default_dock_sizes)

    def default_dock_sizes(self) -> None:
        # tabified only once shown: tabifying earlier leaves a stray tab bar painted
        # over the Controls dock (Qt keeps the first layout's bar)
        if not self.tabifiedDockWidgets(self.docks["Metrics"]):
            self.tabifyDockWidget(self.docks["Cache selection"], self.docks["Kernels"])
            self.tabifyDockWidget(self.docks["Kernels"], self.docks["Block details"])
            self.tabifyDockWidget(self.docks["Metrics"], self.docks["Block tables"])
            self.tabifyDockWidget(self.docks["Block tables"], self.docks["Event log"])
        self.docks["Cache selection"].raise_()
        self.docks["Metrics"].raise_()
        w, h = max(self.width(), 800), max(self.height(), 600)
        self.resizeDocks([self.docks["Controls"], self.docks["Cache selection"]],
                         [int(w * 0.2), int(w * 0.3)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Metrics"]], [int(h * 0.3)], Qt.Orientation.Vertical)

    def render_all(self) -> None:
        """Bring every view up to date now (headless screenshots, benchmarks)."""
        self.frame()
        self.metrics_view.render()
        self.kernels_view.render()
        self.selection_view.render_if_new()
        self.selection_view.render_if_new()

    def views(self) -> dict[str, QWidget]:
        """Named widgets for File > Screenshot of a view."""
        return {"Block pool": self.pool_view, **{k: d.widget() for k, d in self.docks.items()}}

    # ---- engine ---------------------------------------------------------------------
    @property
    def config(self) -> EngineConfig:
        return self.controls.config

    def restart(self, config: EngineConfig) -> None:
        self.controls.set_config(config)
        self.summary.setText(summary_line(config_summary(config)))
        self.metrics_view.reset()
        self.kernels_view.reset()
        self.worker.reset(config)

    def _live_change(self, changes: dict) -> None:
        self.worker.update_live(**changes)
        self.status_message.emit(
            "applied live: " + ", ".join(f"{k} = {v}" for k, v in changes.items()), 4000)

    def _on_ready(self, summary: dict) -> None:
        self.summary.setText(summary_line(summary))
        self.kernels_view.set_backend({"backend": summary.get("backend"),
                                       "reason": summary.get("backend_reason"),
                                       "gpu": summary.get("gpu")})
        self.status_message.emit("engine ready: press Start (F5) or Step (F7)", 0)

    def _on_state(self, state: str) -> None:
        self.loading.setVisible(state == "loading")
        self.controls.start_btn.setEnabled(state in ("paused", "error"))
        self.controls.pause_btn.setEnabled(state == "running")
        self.controls.step_btn.setEnabled(state in ("paused", "running", "error"))
        if state == "done":
            self.status_message.emit("workload finished: Reset to run it again", 0)

    def _on_failed(self, message: str, details: str) -> None:
        self.last_error = (message, details)
        self.status_message.emit(message, 0)
        self.error_shown.emit(message, details)
        if self.show_error_dialogs:
            box = QMessageBox(QMessageBox.Icon.Warning, "TinyServe engine", message,
                              QMessageBox.StandardButton.Ok, self)
            box.setDetailedText(details)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()     # not exec(): the frame timer keeps running behind it

    def _on_block_clicked(self, block_id: int) -> None:
        self.docks["Block details"].show()
        self.docks["Block details"].raise_()
        if self.time_travel.past is not None:   # a past step on screen: the block as it was
            self._clicked_block = -1
            self.details.setPlainText(self.time_travel.past_block_text(block_id))
            return
        self._clicked_block = block_id
        self.details.setPlainText(f"block {block_id}: asking the engine...")
        self.worker.request_block_info(block_id)

    # ---- the frame ------------------------------------------------------------------
    def frame(self) -> None:
        now = time.perf_counter()
        snap = self.worker.take_snapshot()
        if snap is not None:
            self.snapshots += 1
            self.last_snapshot = snap
            self.time_travel.ingest(snap)
            if self.time_travel.live:     # a past step stays on screen until End / L
                self.pool_view.apply_snapshot(snap, now)
                self.tables_view.apply_snapshot(snap)
                self.selection_view.apply_snapshot(snap)
            self.metrics_view.add(snap.metrics, snap.latencies)
            self.kernels_view.add(snap.op_timings)
            self.progress.setValue(int(snap.progress * 1000))
        self.pool_view.render(now)
        self.time_travel.frame_cursor_lines()
        if now - self._plots_t >= PLOT_TURN_S:
            self._plots_t = now
            self._plot_turn = (self._plot_turn + 1) % 7
            if self._plot_turn < 5:
                self.metrics_view.render(plots=2)
            elif self._plot_turn == 5:
                self.kernels_view.render()
            else:
                self.selection_view.render_if_new()
        info = self.worker.take_block_info()
        if info is not None:
            bid, d = info
            self.pool_view.set_block_info(bid, d)
            if bid == self._clicked_block:
                self.details.setPlainText(self.pool_view.details_text(bid, d))

    # ---- files ----------------------------------------------------------------------
    def export_trace(self, path: str | Path) -> int:
        """Chrome Trace JSON of the whole run; returns the number of steps."""
        return self.worker.export("trace", str(Path(path).resolve()))

    def export_metrics(self, path: str | Path) -> int:
        """Per-step metrics CSV; returns the number of rows."""
        return self.worker.export("metrics", str(Path(path).resolve()))

    def save_config(self, path: str | Path) -> None:
        self.controls.flush()
        self.controls.config.save(path)

    def open_config(self, path: str | Path) -> EngineConfig:
        cfg = EngineConfig.load(path)   # ConfigError names the bad key
        self.restart(cfg)
        return cfg

    def shutdown(self) -> None:
        self.timer.stop()
        self.worker.stop()
