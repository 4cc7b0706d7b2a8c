"""The Scene tab: render view with progressive navigation, output selector and legend,
click picking, text queries with relevancy and highlighted boxes, OMPL planning drawn in
2D and 3D, training from the GUI, and exports.

Construction is cheap (widgets only); the scene loads on the worker thread when the tab
is first shown (or `start()` is called), so opening the app stays fast. Every heavy call
runs on `SceneWorker` or `TrainWorker`; the GUI thread only colours and paints."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from tinyserve_core.errors import ConfigError, TinyServeError

from .colorize import OUTPUTS, colorize, label_palette
from .orbit import Orbit
from .panels import ExportPanel, LabelLegend, PlanPanel, QueryPanel, TrainPanel
from .render_view import RenderView

STILL_MS = 250  # no camera motion for this long -> refine at full quality
MOTION_BUDGET_MS = 70.0  # worker time per frame while moving, leaving room for >= 10 fps
MIN_MOTION_SIZE = 96
RENDER_SIZES = (128, 256, 384, 512)
CANDIDATE_COLOURS = (QColor(255, 140, 0), QColor(200, 80, 255))
OUTPUT_NOTES = {"Depth": "depth: near bright, far dark; white = nothing hit",
                "Label entropy": "label entropy: dark = certain, bright = uncertain (object borders)",
                "Query relevancy": "relevancy to the last query: hot = relevant"}


class SceneTab(QWidget):
    status_message = Signal(str, int)

    def __init__(self, scene: str = "room", weights: str | None = None, weights_dir: str | Path | None = None,
                 parent=None):
        super().__init__(parent)
        self.scene, self.weights = scene, weights
        self.weights_dir = Path(weights_dir) if weights_dir else \
            Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "scenes"
        self.worker = None
        self.trainer = None
        self.lab = None
        self.orbit: Orbit | None = None
        self.render_size = 256
        self.frame = None  # the displayed worker Frame
        self._seq = 0
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
        self.adaptive_box = QCheckBox("Adaptive while moving")
        self.adaptive_box.setChecked(True)
        self.adaptive_box.setToolTip("lower the bake's resolution while the camera moves to keep >= 10 frames/s; "
                                     "the still refine restores full resolution")
        self.adaptive_box.toggled.connect(lambda on: setattr(self, "adaptive", on))
        reset = QPushButton("Reset view")
        reset.clicked.connect(self.reset_view)
        bar = QHBoxLayout()
        for w in (QLabel("Output"), self.output, QLabel("Resolution"), self.size, self.adaptive_box, reset):
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
        for w in (self.query_panel.edit, self.plan_panel.go, self.train_panel.go, self.output, self.size):
            w.setEnabled(on)

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

    def motion_size(self) -> int:
        """The bake's side while the camera moves: the full size if it fits the frame
        budget, else the largest that does (the view scales it up; the still refine
        restores every pixel)."""
        if not self.adaptive or self._ms_per_px is None:
            return self.render_size
        side = int((MOTION_BUDGET_MS / self._ms_per_px) ** 0.5) // 16 * 16
        return max(min(MIN_MOTION_SIZE, self.render_size), min(self.render_size, side))

    def request_frame(self, quality: str, size: int | None = None):
        if self.lab is None:
            return
        self._seq += 1
        size = size or (self.motion_size() if quality == "motion" else self.render_size)
        self.worker.request_render(self.orbit.camera(size), quality, self._seq)

    def _on_still(self):
        """Resting: the bake at full resolution at once, then the field's full quality."""
        self.request_frame("bake", self.render_size)
        self._refine_after = self._seq

    def _on_frame(self, frame):
        if self.frame is not None and frame.seq < self.frame.seq:
            return  # an older request finishing late
        self.frame = frame
        if frame.quality == "motion":
            px = frame.result.camera.width * frame.result.camera.height
            rate = frame.ms / px
            self._ms_per_px = rate if self._ms_per_px is None else 0.7 * self._ms_per_px + 0.3 * rate
        if frame.seq == self._refine_after:
            self._refine_after = None
            self.request_frame("full")
        self.redraw()
        self.view.hud = f"{frame.quality} {frame.result.camera.width}px  {frame.ms:.0f} ms"
        if self.view3d is not None and frame.quality == "full":
            # only at rest: redrawing the cloud per orbit frame (software GL) would stall the GUI
            self.view3d.set_camera(frame.result.camera)

    # ---- drawing --------------------------------------------------------------------------
    def relevancy(self):
        """The last query's relevancy for the displayed frame (recomputed per frame so the
        overlay follows the camera)."""
        q = self.query_result
        if q is None or self.frame is None:
            return None
        from tinyserve_core.scene.query import ObjectIndex

        sims = np.array([q.scores[n] for n in self.lab.labels[1:]])
        picks = [self.lab.labels.index(c.label) - 1 for c in q.candidates]
        return ObjectIndex.relevancy(sims, self.frame.result.probs, picks)

    def redraw(self):
        if self.frame is None:
            return
        out = self.output.currentText()
        self.view.set_image(colorize(self.frame.result, out, self.relevancy() if out == "Query relevancy" else None))
        self.note.setText(OUTPUT_NOTES.get(out, ""))
        cam = self.frame.result.camera
        ov = self.view.overlays
        ov.pick = None
        if self.pick_result is not None and self.pick_result.hit:
            uv, front = cam.project(np.array([self.pick_result.point]))
            if front[0]:
                ov.pick = (uv[0, 0], uv[0, 1], f"{self.pick_result.label} {self.pick_result.confidence:.0%}")
        ov.boxes = []
        if self.query_result is not None:
            amb = self.query_result.status == "ambiguous"
            for c, colour in zip(self.query_result.candidates, CANDIDATE_COLOURS):
                if c.extent is not None:
                    uv, front = cam.project(box_corners(c.extent, self.lab.bake.grid.voxel))
                    ov.boxes.append((uv, front, colour, c.label + ("?" if amb else "")))
        ov.path = None
        if self.plan_result is not None and self.plan_result.solved:
            ov.path = cam.project(self.plan_result.path)
        self.view.update()

    # ---- navigation -----------------------------------------------------------------------
    def _on_drag(self, kind: str, dx: float, dy: float):
        if self.orbit is None:
            return
        self.orbit = self.orbit.orbited(dx, dy) if kind == "orbit" else self.orbit.panned(dx, dy, self.render_size)
        self.request_frame("motion")
        self._still.start()

    def _arm_refine(self):
        self._still.start()

    def _on_wheel(self, steps: float):
        if self.orbit is None:
            return
        self.orbit = self.orbit.zoomed(steps)
        self.request_frame("motion")
        self._still.start()

    def _on_size(self, i: int):
        self.render_size = RENDER_SIZES[i]
        self.request_frame("motion")
        self._still.start()

    def set_orbit(self, orbit: Orbit):
        self.orbit = orbit
        self.request_frame("motion")
        self._still.start()

    def reset_view(self):
        if self.lab is not None:
            self.set_orbit(self.home)

    # ---- pick -----------------------------------------------------------------------------
    def _on_click(self, x: float, y: float):
        if self.frame is None:
            return
        self.pick_at(x, y)

    def pick_at(self, x: float, y: float):
        """Pick the displayed frame's pixel (x right, y down, in render pixels)."""
        cam = self.frame.result.camera
        self.worker.submit("pick", self.lab.pick, cam, x, y)

    def _on_pick(self, r):
        self.pick_result = r
        if r.hit:
            x, y, z = r.point
            self.pick_info.setText(f"<b>{r.label}</b> &nbsp; confidence {r.confidence:.1%} &nbsp; "
                                   f"at ({x:.3f}, {y:.3f}, {z:.3f}) m, depth {r.depth:.3f} m")
        else:
            self.pick_info.setText("nothing there (background)")
        self.redraw()

    # ---- query ----------------------------------------------------------------------------
    def ask(self, text: str):
        qp = self.query_panel
        text = (text or "").strip()
        if not text:
            qp.error.show_error("query: type what to look for, e.g. \"the red mug\"")
            return
        if self.frame is None:
            qp.error.show_error("query: the scene is still loading")
            return
        qp.error.show_error("")
        qp.status.setText(f"asking \"{text}\"...")
        self._pending["query"] = time.perf_counter()
        self.worker.submit("query", self.lab.query, text, self.frame.result)

    def _on_query(self, q):
        from .exports import query_record

        qp = self.query_panel
        self.query_result = q
        self.query_log.append(query_record(q, time.time()))
        if q.status == "found":
            c = q.candidates[0]
            qp.status.setText(f"<b>found: {c.label}</b> (similarity {c.score:.2f}, {q.latency_ms:.0f} ms)")
        elif q.status == "ambiguous":
            a, b = q.candidates
            qp.status.setText(f"<b>ambiguous</b>: {a.label} ({a.score:.2f}) or {b.label} ({b.score:.2f})")
        else:
            best = max(q.scores, key=q.scores.get)
            qp.status.setText(f"<b>not found</b>: nothing here matches \"{q.query}\" "
                              f"(closest: {best}, {q.scores[best]:.2f})")
        qp.best_view.setEnabled(bool(q.candidates))
        if q.candidates:
            i = self.plan_panel.target.findText(q.candidates[0].label)
            if i >= 0:
                self.plan_panel.target.setCurrentIndex(i)
        item_text = f"{q.query}  ->  {q.label}"
        qp.history.insertItem(0, item_text)
        qp.history.item(0).setData(Qt.ItemDataRole.UserRole, q.query)
        self.output.blockSignals(True)
        self.output.setCurrentText("Query relevancy")
        self.output.blockSignals(False)
        self.redraw()
        self.view.repaint()
        self.timings["query_to_overlay_ms"] = (time.perf_counter() - self._pending.pop("query")) * 1000

    def jump_to_best_view(self):
        q = self.query_result
        if q is None or not q.candidates:
            return
        self.worker.submit("best_view", self._best_view_job, q.candidates[0].label)

    def _best_view_job(self, label: str):
        cam = self.lab.best_view(label, size=self.render_size)
        return Orbit.looking_from(cam.position, self.lab.bake.extents()[label].centroid, cam.fov_y)

    def _on_best_view(self, orbit: Orbit):
        self.set_orbit(orbit)

    # ---- plan -----------------------------------------------------------------------------
    def plan_settings(self):
        """(target, Robot, planner) from the fields; a bad value is shown next to its field."""
        from tinyserve_core.scene.planner import PLANNERS, Robot

        p = self.plan_panel
        for e in (p.radius_error, p.target_error, p.planner_error):
            e.show_error("")
        target = p.target.currentText()
        if not target:
            p.target_error.show_error("target: ask a query or choose an object")
            return None
        try:
            radius = float(p.radius.text())
        except ValueError:
            p.radius_error.show_error(f"radius: must be a number of metres, got {p.radius.text()!r}")
            return None
        try:
            robot = Robot(p.robot.currentText(), radius)
        except ConfigError as e:
            p.radius_error.show_error(str(e))
            return None
        if p.planner.currentText() not in PLANNERS:
            p.planner_error.show_error(f"planner: must be one of {', '.join(PLANNERS)}")
            return None
        return target, robot, p.planner.currentText()

    def plan(self):
        s = self.plan_settings()
        if s is None or self.lab is None:
            return
        self.plan_panel.result.setText(f"planning a path to {s[0]}...")
        self._pending["plan"] = time.perf_counter()
        self.worker.submit("plan", self._plan_job, *s)

    def _plan_job(self, target, robot, planner):
        res = self.lab.plan(target, robot, planner=planner)
        return res, self.lab.planner.inflated(robot)

    def _on_plan(self, out):
        res, (blocked, lo, voxel) = out
        self.plan_result = res
        p = self.plan_panel
        if res.solved:
            p.result.setText(f"<b>path to {res.target}</b> ({res.robot.kind}, r = {res.robot.radius:.2f} m, "
                             f"{res.planner})<br>length <b>{res.length:.2f} m</b>, min clearance "
                             f"<b>{res.min_clearance * 100:.1f} cm</b>, planning <b>{res.planning_ms:.0f} ms</b>, "
                             f"{len(res.path)} waypoints")
        else:
            p.result.setText(f"<span style='color:#e0473c'><b>NO PATH</b> ({res.status})</span>: {res.message}")
        self.redraw()
        self.view.repaint()
        if self.view3d is not None:
            self.view3d.set_blocked(blocked, lo, voxel)
            self.view3d.set_path(res.path if res.solved else None)
        self.timings["plan_to_draw_ms"] = (time.perf_counter() - self._pending.pop("plan")) * 1000

    def clear_path(self):
        self.plan_result = None
        self.plan_panel.result.setText("")
        if self.view3d is not None:
            self.view3d.set_path(None)
            self.view3d.set_blocked(None, None, 0.0)
        self.redraw()

    # ---- training -------------------------------------------------------------------------
    def train_settings(self):
        from tinyserve_core.scene.train import TrainConfig

        t = self.train_panel
        t.iters_error.show_error("")
        t.size_error.show_error("")
        vals = {}
        for name, edit, err in (("iters", t.iters, t.iters_error), ("size", t.size, t.size_error)):
            try:
                vals[name] = int(edit.text())
            except ValueError:
                err.show_error(f"{name}: must be a whole number, got {edit.text()!r}")
                return None
        try:
            TrainConfig(size=vals["size"], iters=vals["iters"]).validate()
        except ConfigError as e:
            (t.iters_error if e.field == "iters" else t.size_error).show_error(str(e))
            return None
        if vals["size"] > 512:
            t.size_error.show_error(f"size: at most 512 pixels here, got {vals['size']}")
            return None
        return vals["iters"], vals["size"]

    def train(self, threads: int | None = None):
        import os

        from .train_worker import TrainWorker

        s = self.train_settings()
        if s is None or self.trainer is not None:
            return
        t = self.train_panel
        out = self.weights_dir / f"{self.scene}.weights.safetensors"
        self.trainer = TrainWorker(self.scene, s[0], s[1], out, threads or min(2, os.cpu_count() or 1), self)
        self.trainer.progress.connect(self._on_train_progress)
        self.trainer.finished_ok.connect(self._on_trained)
        self.trainer.cancelled_at.connect(self._on_train_cancelled)
        self.trainer.failed.connect(self._on_train_failed)
        self.trainer.finished.connect(self._train_thread_done)
        t.bar.setRange(0, s[0])
        t.bar.setValue(0)
        t.go.setEnabled(False)
        t.cancel.setEnabled(True)
        t.status.setText("preparing training views...")
        self.trainer.start()

    def cancel_training(self):
        if self.trainer is not None:
            self.trainer.cancel()
            self.train_panel.status.setText("cancelling...")

    def _on_train_progress(self, p):
        t = self.train_panel
        t.bar.setValue(p.step)
        t.status.setText(f"step {p.step}/{p.total}, PSNR <b>{p.psnr:.2f} dB</b>, loss {p.loss:.4f}, {p.elapsed:.0f} s")
        if p.preview is not None:
            t.preview.setPixmap(QPixmap.fromImage(_qimage((np.clip(p.preview, 0, 1) * 255).astype(np.uint8))))

    def _on_trained(self, path: str, stats: dict):
        self.train_panel.status.setText(
            f"trained {stats['steps']} steps in {stats['train_seconds']:.0f} s: held-out PSNR "
            f"<b>{stats['heldout_psnr']:.2f} dB</b>, mIoU <b>{stats['heldout_miou']:.3f}</b>; saved {path}; reloading")
        self.weights = path
        self.frame = None
        self.worker.submit("load", self.worker.load, self.scene, path)

    def _on_train_cancelled(self, step: int):
        self.train_panel.status.setText(f"cancelled at step {step}; nothing saved, the scene is unchanged")

    def _on_train_failed(self, msg: str):
        self.train_panel.status.setText(f"<span style='color:#e0473c'>training failed: {msg}</span>")

    def _train_thread_done(self):
        self.trainer = None
        self.train_panel.go.setEnabled(True)
        self.train_panel.cancel.setEnabled(False)

    # ---- exports --------------------------------------------------------------------------
    def export_render_png(self, path) -> Path:
        from tinyserve_core.errors import InputFileError

        if self.frame is None or not self.view.grab().save(str(path), "PNG"):
            raise InputFileError(str(path), None, "could not write the render view's image")
        return Path(path)

    def export_3d_png(self, path) -> Path:
        return self.view3d.save_png(path)

    def export_path_json(self, path) -> Path:
        from .exports import write_path_json

        return write_path_json(path, self.plan_result, self.scene)

    def export_path_csv(self, path) -> Path:
        from .exports import write_path_csv

        return write_path_csv(path, self.plan_result)

    def export_query_log(self, path) -> Path:
        from .exports import write_query_log

        return write_query_log(path, self.query_log)

    def _export_dialog(self, what: str, filt: str, fn):
        path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", "", filt)
        if not path:
            return
        try:
            out = fn(path)
        except (TinyServeError, OSError) as e:
            self.export_panel.status.setText(f"<span style='color:#e0473c'>{e}</span>")
            return
        self.export_panel.status.setText(f"wrote {out}")
        self.status_message.emit(f"wrote {out}", 5000)


def box_corners(extent, pad: float) -> np.ndarray:
    """The 8 corners of an object's box (index bits: x, y, z), padded by half a voxel so
    the box encloses the surface rather than the solid grid corners."""
    lo = np.asarray(extent.bbox_min) - pad / 2
    hi = np.asarray(extent.bbox_max) + pad / 2
    return np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]]
                     for i in range(8)])


def _qimage(rgb8: np.ndarray) -> QImage:
    a = np.ascontiguousarray(rgb8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def make_tab(window) -> SceneTab:
    """The main window's plug-in hook (app/main_window.py OPTIONAL_TABS): cheap to build;
    the scene loads when the tab is first shown."""
    tab = SceneTab()
    if hasattr(window, "_status"):
        tab.status_message.connect(window._status)
    return tab
