"""The main window: a tab per lab (Serving now; Scene plugs in with `add_tab`), the
File/Engine/View menus with shortcuts, the status bar, and QSettings for the layout and
the last settings."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMenu, QMessageBox, QTabWidget, QWidget

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.errors import TinyServeError

from .serving.story import FIRST_RUN  # what a first start shows (the memory story)
from .serving.tab import ServingTab
from .workers import default_simulation_factory


# (module with make_tab(window) -> QWidget, tab title), added when the module exists
OPTIONAL_TABS = (("app.scene.tab", "Scene"), ("app.attach.tab", "Attach"))


def first_run_config() -> EngineConfig:
    return EngineConfig.from_dict(FIRST_RUN)


def default_settings() -> QSettings:
    return QSettings("TinyServe", "tinyserve-gui")


def last_config(settings: QSettings) -> EngineConfig | None:
    raw = settings.value("serving/config")
    if not raw:
        return None
    try:
        return EngineConfig.from_dict(json.loads(raw))
    except (TinyServeError, ValueError, TypeError):
        return None    # settings from an older version: start from the defaults


class MainWindow(QMainWindow):
    def __init__(self, config: EngineConfig | None = None, *, factory=default_simulation_factory,
                 settings: QSettings | None = None, restore_layout: bool = True,
                 engine_mode: str = "process", extra_tabs: bool = True):
        super().__init__()
        self.settings = settings if settings is not None else default_settings()
        if config is None:
            config = last_config(self.settings) or first_run_config()
        self.setWindowTitle("TinyServe lab")
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)
        self.serving = ServingTab(config, factory=factory, engine_mode=engine_mode)
        self.add_tab(self.serving, "Serving")
        self.serving.status_message.connect(self._status)
        if extra_tabs:
            self._add_optional_tabs()
        self._build_menus()
        self.serving.controls.attach_clicked.connect(self.attach_dialog)   # issue 15
        if not (restore_layout and self._restore_layout()):
            self.fit_to_screen()
        self.statusBar().showMessage("starting the engine...")

    def add_tab(self, widget: QWidget, title: str) -> int:
        """Another lab (e.g. the Scene tab): any widget; `views()` and `shutdown()` are
        used when it has them."""
        return self.tabs.addTab(widget, title)

    def _add_optional_tabs(self) -> None:
        """Labs that live in their own package plug in by providing `make_tab(window)`
        in `app/<lab>/tab.py` (the Scene lab: `app/scene/tab.py`). A lab that fails to
        build shows its error in its tab; the Serving tab is unaffected."""
        import importlib
        import importlib.util
        import traceback

        from PySide6.QtWidgets import QTextBrowser
        for module, title in OPTIONAL_TABS:
            try:
                if importlib.util.find_spec(module) is None:
                    continue
            except ModuleNotFoundError:
                continue
            try:
                widget = importlib.import_module(module).make_tab(self)
            except Exception:
                widget = QTextBrowser()
                widget.setPlainText(f"The {title} tab could not start:\n\n{traceback.format_exc()}")
            self.add_tab(widget, title)

    def _status(self, text: str, timeout_ms: int) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    # ---- menus ------------------------------------------------------------------------
    def _action(self, menu: QMenu, text: str, slot, shortcut=None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self):
        f = self.menuBar().addMenu("&File")
        self._action(f, "Open session config...", self.open_config_dialog, QKeySequence.StandardKey.Open)
        self._action(f, "Save session config...", self.save_config_dialog, QKeySequence.StandardKey.Save)
        self._action(f, "Attach to a vLLM / SGLang server...", self.attach_dialog, "Ctrl+Shift+A")  # issue 15
        f.addSeparator()
        self._action(f, "Export trace (Chrome JSON, Perfetto)...", self.export_trace_dialog, "Ctrl+E")
        self._action(f, "Export metrics (CSV)...", self.export_metrics_dialog, "Ctrl+Shift+E")
        f.addSeparator()
        self._action(f, "Screenshot of window...", lambda: self.screenshot_dialog(None), "Ctrl+Shift+S")
        self.view_shots = f.addMenu("Screenshot of view")
        self.view_shots.aboutToShow.connect(self._fill_view_shots)
        f.addSeparator()
        self._action(f, "Quit", self.close, QKeySequence.StandardKey.Quit)
        e = self.menuBar().addMenu("&Engine")
        s = self.serving
        self._action(e, "Start", s.worker.start_engine, "F5")
        self._action(e, "Pause", s.worker.pause, "F6")
        self._action(e, "Step", s.worker.step_once, "F7")
        self._action(e, "Reset", lambda: s.restart(s.config), "Ctrl+R")
        v = self.menuBar().addMenu("&View")
        for d in s.docks.values():
            v.addAction(d.toggleViewAction())

    def _current_views(self) -> dict[str, QWidget]:
        w = self.tabs.currentWidget()
        return w.views() if hasattr(w, "views") else {}

    def _fill_view_shots(self):
        self.view_shots.clear()
        for name, w in self._current_views().items():
            self._action(self.view_shots, name + "...", lambda _=False, n=name: self.screenshot_dialog(n))

    # ---- file actions ------------------------------------------------------------------
    def attach_dialog(self):
        """The Attach tab's dialog (issue 15; the tab is added when missing)."""
        from .attach.tab import open_attach
        open_attach(self)

    def screenshot(self, path: str | Path, view: str | None = None) -> Path:
        if view is None:
            w = self
        else:
            views = self._current_views()
            if view not in views:
                raise ValueError(f"view: no view named {view!r} (views: {', '.join(views)})")
            w = views[view]
            dock = w.parentWidget()
            while dock is not None and not hasattr(dock, "toggleViewAction"):
                dock = dock.parentWidget()
            if dock is not None:   # it may sit behind another dock's tab
                dock.show()
                dock.raise_()
                from PySide6.QtWidgets import QApplication
                for _ in range(5):   # the tab switch lays the dock out over a few events
                    QApplication.processEvents()
        if not w.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return Path(path)

    def _ask_path(self, title: str, filt: str, save: bool = True) -> str | None:
        fn = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = fn(self, title, "", filt)
        return path or None

    def _file_dialog(self, title: str, filt: str, what: str, fn, done: str, ms: int = 8000,
                     save: bool = True) -> None:
        """Ask for a path, run fn(path) and say `done` ({p}: the path, {out}: what fn
        returned) in the status bar; a bad file is a warning, never a traceback."""
        p = self._ask_path(title, filt, save)
        if not p:
            return
        try:
            out = fn(p)
        except (TinyServeError, OSError, ValueError) as e:
            self.statusBar().showMessage(f"{what} failed: {e}")
            QMessageBox.warning(self, f"TinyServe: {what}", str(e))
            return
        self.statusBar().showMessage(done.format(p=p, out=out), ms)

    def screenshot_dialog(self, view: str | None):
        self._file_dialog("Save screenshot", "PNG image (*.png)", "screenshot",
                          lambda p: self.screenshot(p, view), "saved {p}", 5000)

    def export_trace_dialog(self):
        self._file_dialog("Export trace", "Chrome trace (*.json)", "export trace", self.serving.export_trace,
                          "wrote {out} steps to {p} (open it in ui.perfetto.dev)")

    def export_metrics_dialog(self):
        self._file_dialog("Export metrics", "CSV (*.csv)", "export metrics", self.serving.export_metrics,
                          "wrote {out} rows to {p}")

    def save_config_dialog(self):
        self._file_dialog("Save session config", "JSON (*.json)", "save config", self.serving.save_config,
                          "saved {p} (tinyserve simulate --config {p})")

    def open_config_dialog(self):
        self._file_dialog("Open session config", "JSON (*.json)", "open config", self.serving.open_config,
                          "loaded {p}; the engine restarts", save=False)

    # ---- settings ----------------------------------------------------------------------
    def fit_to_screen(self, fraction: float = 0.9) -> None:
        """`fraction` of the screen's available area, centred: a fixed size overflows
        small screens and wastes large ones."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            self.resize(1600, 1000)
            return
        area = screen.availableGeometry()
        w, h = int(area.width() * fraction), int(area.height() * fraction)
        self.resize(w, h)
        self.move(area.x() + (area.width() - w) // 2, area.y() + (area.height() - h) // 2)

    def _restore_layout(self) -> bool:
        """The last window geometry and dock layout; False when there was none to restore."""
        g = self.settings.value("window/geometry")
        restored = isinstance(g, QByteArray) and self.restoreGeometry(g)
        st = self.settings.value("serving/state")
        if isinstance(st, QByteArray) and self.serving.restoreState(st):
            self.serving.layout_restored = True
        return bool(restored)

    def save_settings(self):
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("serving/state", self.serving.saveState())
        self.settings.setValue("serving/config", json.dumps(self.serving.config.to_dict()))
        self.settings.sync()

    def closeEvent(self, ev):
        self.save_settings()
        for i in range(self.tabs.count()):
            w = self.tabs.widget(i)
            if hasattr(w, "shutdown"):
                w.shutdown()
        super().closeEvent(ev)
