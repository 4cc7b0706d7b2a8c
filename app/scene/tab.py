"""The Scene tab: render view with progressive navigation, output selector and legend,
click picking, text queries with relevancy and highlighted boxes, OMPL planning drawn in
2D and 3D, training from the GUI, and exports.

This module builds the tab (layout, signal wiring, lifecycle) and routes the worker's
results; each job lives in its own mixin, all sharing the state set up in `__init__`:
camera_control (navigation, progressive frames), overlay (colouring and overlays),
find_control (pick, query, best view), plan_control, train_control, export_control.

Construction is cheap (widgets only); the scene loads on the worker thread when the tab
is first shown (or `start()` is called), so opening the app stays fast. Every heavy call
runs on `SceneWorker` or `TrainWorker`; the GUI thread only colours and paints."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from .camera_control import RENDER_SIZES, STILL_MS, CameraControl
from .colorize import OUTPUTS, label_palette
from .export_control import ExportControl
from .find_control import FindControl
from .orbit import Orbit
from .overlay import OverlayDrawing
from .panels import ExportPanel, LabelLegend, PlanPanel, QueryPanel, TrainPanel
from .plan_control import PlanControl
from .render_view import RenderView
from .train_control import TrainControl


class SceneTab(CameraControl, OverlayDrawing, FindControl, PlanControl, TrainControl, ExportControl, QWidget):
    status_message = Signal(str, int)

    def __init__(self, scene: str = "room", weights: str | None = None, weights_dir: str | Path | None = None,
                 parent=None):
        super().__init__(parent)
        self.scene, self.weights = scene, weights
        self._weights_for: dict[str, str | None] = {scene: weights}  # per scene: the weights it last used
        self.weights_dir = Path(weights_dir) if weights_dir else \
            Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "scenes"
        self.worker = None
        self.trainer = None
        self.lab = None
        self.orbit: Orbit | None = None
        self.render_size = 256
        self.frame = None  # the displayed worker Frame
        self._seq = 0
        self._first_seq = 0  # the first frame request of the scene now loaded
        self.adaptive = True  # lower the bake's resolution while moving to keep the frame rate
        self._ms_per_px: float | None = None
        self._refine_after: int | None = None
        self.query_result = None
        self.query_log: list[dict] = []
        self.plan_result = None
        self.pick_result = None
        self.timings: dict[str, float] = {}
        self._pending: dict[str, float] = {}  # job kind -> submit time
        self.view3d = None
        self._started = False
        self._build()

    # ---- layout -------------------------------------------------------------------------
    def _build(self):
        from tinyserve_core.scene.spec import available_scenes

        self.scene_box = QComboBox()
        self.scene_box.setToolTip("the scene to explore: the shipped ones (assets/scenes)")
        names = available_scenes()
        self.scene_box.addItems(names if self.scene in names else [self.scene, *names])
        self.scene_box.setCurrentText(self.scene)
        self.scene_box.activated.connect(lambda i: self.choose_scene(self.scene_box.itemText(i)))
        self.view = RenderView()
        self.view.dragged.connect(self._on_drag)
        self.view.drag_finished.connect(self._arm_refine)
        self.view.wheeled.connect(self._on_wheel)
        self.view.clicked.connect(self._on_click)
        self.output = QComboBox()
        self.output.addItems(OUTPUTS)
        self.output.currentTextChanged.connect(lambda _: self.redraw())
        self.size = QComboBox()
        self.size.addItems([f"{s} x {s}" for s in RENDER_SIZES])
        self.size.setCurrentIndex(RENDER_SIZES.index(self.render_size))
        self.size.currentIndexChanged.connect(self._on_size)
        # a short label: with "while moving" spelt out the bar alone was wider than the
        # render column at 1280x800 and the tab grew past the window
        self.adaptive_box = QCheckBox("Adaptive")
        self.adaptive_box.setChecked(True)
        self.adaptive_box.setToolTip("adaptive while moving: lower the bake's resolution while the camera moves to "
                                     "keep >= 10 frames/s; the still refine restores full resolution")
        self.adaptive_box.toggled.connect(lambda on: setattr(self, "adaptive", on))
        reset = QPushButton("Reset view")
        reset.clicked.connect(self.reset_view)
        bar = QHBoxLayout()
        for w in (QLabel("Scene"), self.scene_box, QLabel("Output"), self.output, QLabel("Resolution"), self.size, self.adaptive_box, reset):
            bar.addWidget(w)
        bar.addStretch(1)
        self.pick_info = QLabel("Click the render to pick a point. Drag: orbit; right-drag or Shift+drag: pan; wheel: zoom.")
        self.pick_info.setWordWrap(True)
        self.pick_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = QLabel()
        self.note.setStyleSheet("color: #888;")
        self.legend = LabelLegend()
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addLayout(bar)
        lv.addWidget(self.view, 1)
        lv.addWidget(self.pick_info)
        lv.addWidget(self.note)
        lv.addWidget(self.legend)

        self.view3d_holder = QWidget()
        self._holder_lay = QVBoxLayout(self.view3d_holder)
        self._holder_lay.setContentsMargins(0, 0, 0, 0)
        self._holder_lay.addWidget(QLabel("3D view"))

        self.query_panel = QueryPanel()
        self.plan_panel = PlanPanel()
        self.train_panel = TrainPanel()
        self.export_panel = ExportPanel()
        side = QWidget()
        sv = QVBoxLayout(side)
        for w in (self.query_panel, self.plan_panel, self.train_panel, self.export_panel):
            sv.addWidget(w)
        sv.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(330)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.view3d_holder)
        split.addWidget(scroll)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 0)
        split.setSizes([760, 480, 340])
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self._still = QTimer(self)
        self._still.setSingleShot(True)
        self._still.setInterval(STILL_MS)
        self._still.timeout.connect(self._on_still)

        q, p, t, e = self.query_panel, self.plan_panel, self.train_panel, self.export_panel
        q.edit.returnPressed.connect(lambda: self.ask(q.edit.text()))
        q.best_view.clicked.connect(self.jump_to_best_view)
        q.history.itemDoubleClicked.connect(lambda item: self.ask(item.data(Qt.ItemDataRole.UserRole)))
        p.go.clicked.connect(self.plan)
        p.clear.clicked.connect(self.clear_path)
        p.radius.textChanged.connect(lambda _: p.radius_error.show_error(""))
        p.robot.currentTextChanged.connect(lambda k: p.radius.setText("0.12" if k == "ground" else "0.05"))
        t.go.clicked.connect(self.train)
        t.cancel.clicked.connect(self.cancel_training)
        e.render_png.clicked.connect(lambda: self._export_dialog("render PNG", "PNG image (*.png)", self.export_render_png))
        e.view3d_png.clicked.connect(lambda: self._export_dialog("3D view PNG", "PNG image (*.png)", self.export_3d_png))
        e.path_json.clicked.connect(lambda: self._export_dialog("path JSON", "JSON (*.json)", self.export_path_json))
        e.path_csv.clicked.connect(lambda: self._export_dialog("path CSV", "CSV (*.csv)", self.export_path_csv))
        e.query_log.clicked.connect(lambda: self._export_dialog("query log", "JSON lines (*.jsonl)", self.export_query_log))
        self._set_enabled(False)

    def _set_enabled(self, on: bool):
        for w in (self.query_panel.edit, self.plan_panel.go, self.train_panel.go, self.output, self.size,
                  self.scene_box):
            w.setEnabled(on)

    def choose_scene(self, name: str) -> bool:
        """Explore another scene: before the tab starts it only changes what will load;
        afterwards the worker loads it (after any job in flight) and the views, legend,
        plan targets and overlays follow. Refused while a training run is going (it
        trains and reloads the scene it started with)."""
        if name == self.scene:
            return True
        if self.trainer is not None:
            self.scene_box.setCurrentText(self.scene)
            self.status_message.emit(f"cannot switch to {name!r} while training {self.scene!r}", 5000)
            return False
        self._weights_for[self.scene] = self.weights
        self.scene, self.weights = name, self._weights_for.get(name)
        if self.scene_box.findText(name) < 0:
            self.scene_box.addItem(name)
        self.scene_box.setCurrentText(name)
        if not self._started:
            return True
        self.lab = self.frame = self._refine_after = None
        self.clear_path()
        self.query_result = self.pick_result = None
        self.query_panel.status.setText("")
        self.query_panel.best_view.setEnabled(False)
        self.pick_info.setText("")
        self._set_enabled(False)
        self.view.message = f"loading {name}..."
        self.view.update()
        self.worker.drop_background()  # the old scene's point cloud must not follow the new one
        self.worker.submit("load", self.worker.load, self.scene, self.weights)
        return True

    # ---- lifecycle ------------------------------------------------------------------------
    def showEvent(self, ev):
        super().showEvent(ev)
        self.start()

    def start(self):
        """Make the 3D view and start loading the scene (idempotent)."""
        if self._started:
            return
        self._started = True  # making the GL widget can deliver another showEvent
        from .view3d import Scene3DView
        from .worker import SceneWorker

        self.view3d = Scene3DView()
        self._holder_lay.addWidget(self.view3d, 1)
        self.worker = SceneWorker(self)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self.worker.start()
        self.worker.submit("load", self.worker.load, self.scene, self.weights)

    def shutdown(self):
        if self.trainer is not None:
            self.trainer.cancel()
            self.trainer.wait(30000)
        if self.worker is not None:
            self.worker.stop()

    def views(self) -> dict[str, QWidget]:
        out = {"Scene render": self.view}
        if self.view3d is not None:
            out["Scene 3D"] = self.view3d
        return out

    @property
    def ready(self) -> bool:
        return self.lab is not None and self.frame is not None

    # ---- worker results -----------------------------------------------------------------
    def _on_done(self, kind: str, res):
        if self.lab is None and kind != "load":  # asked of the scene shown before a switch
            self._pending.pop(kind, None)
            return
        handler = {"load": self._on_loaded, "render": self._on_frame, "pick": self._on_pick,
                   "query": self._on_query, "best_view": self._on_best_view, "plan": self._on_plan,
                   "cloud": self._on_cloud, "index": lambda _: None}[kind]
        handler(res)

    def _on_failed(self, kind: str, msg: str):
        where = {"query": self.query_panel.error, "plan": self.plan_panel.target_error,
                 "best_view": self.query_panel.error}.get(kind)
        if where is not None:
            where.show_error(msg)
        elif kind == "pick":
            self.pick_info.setText(f"pick failed: {msg}")
        else:
            self.view.message = f"{kind} failed: {msg}"
            self.view.update()
        self.status_message.emit(f"scene {kind} failed: {msg}", 8000)

    def _on_loaded(self, lab):
        self.lab = lab
        spec = lab.spec
        self.home = Orbit(tuple(map(float, spec.camera_target)), 30.0, 40.0, float(spec.camera_distance))
        self.orbit = self.home
        self.legend.set_labels(lab.labels, label_palette(len(lab.labels)))
        self.plan_panel.target.clear()
        self.plan_panel.target.addItems([n for n in lab.labels[1:] if n in lab.bake.extents()])
        self.plan_result = self.query_result = self.pick_result = None
        self._set_enabled(True)
        self.view.message = ""
        self._first_seq = self._seq + 1  # frames asked of the scene before this one are stale
        self.request_frame("bake")
        self._still.start()
        # warm the text encoder and build the 3D cloud while the user looks around
        self.worker.submit("index", lambda: lab.index, background=True)
        self.worker.submit("cloud", lab.bake.corner_points, background=True)
        self.status_message.emit(f"scene '{spec.name}' loaded ({len(lab.labels) - 1} labels)", 5000)

    def _on_cloud(self, pts):
        xyz, rgb, _ = pts
        self.view3d.set_scene(xyz, rgb, self.lab.spec.camera_target)
        if self.frame is not None:
            self.view3d.set_camera(self.frame.result.camera)


def make_tab(window) -> SceneTab:
    """The main window's plug-in hook (app/main_window.py OPTIONAL_TABS): cheap to build;
    the scene loads when the tab is first shown."""
    tab = SceneTab()
    if hasattr(window, "_status"):
        tab.status_message.connect(window._status)
    return tab
