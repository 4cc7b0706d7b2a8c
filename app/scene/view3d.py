"""The 3D view: the bake as a coloured point cloud, the planner's inflated occupancy, the
path with start and goal, and the render camera's frustum, in a pyqtgraph GLViewWidget.

Where no OpenGL context can be made (Qt's offscreen platform, a display without GL) the
view is a plain message and every setter is a no-op, so the rest of the tab works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStackedLayout, QWidget

MAX_POINTS = 80_000
MAX_BLOCKED = 40_000
# On a software renderer (Mesa's llvmpipe under Xvfb or a remote X server) every paint
# rasterises on the CPU, in the GUI thread: 80,000 scene points with 40,000 translucent
# obstacle points took 60-85 ms a paint on the 2-core dev machine, 40,000 + 15,000 take
# 20-30 ms. (The long paints seen after plans were the GIL, not the rasteriser: see the
# switch interval in worker.py.)
SOFTWARE_MAX_POINTS = 40_000
SOFTWARE_MAX_BLOCKED = 15_000
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
FRUSTUM_DEPTH = 0.35  # metres drawn in front of the camera


def gl_available() -> tuple[bool, str, str]:
    """(ok, reason, renderer): can this process make a current OpenGL context, and the
    GL_RENDERER string of one ("" when none)."""
    from PySide6.QtGui import QGuiApplication, QOffscreenSurface, QOpenGLContext

    plat = QGuiApplication.platformName()
    if plat in ("offscreen", "minimal", "vnc"):
        return False, f"the '{plat}' Qt platform has no OpenGL", ""
    ctx = QOpenGLContext()
    if not ctx.create():
        return False, "no OpenGL context could be created", ""
    surf = QOffscreenSurface()
    surf.setFormat(ctx.format())
    surf.create()
    ok = ctx.makeCurrent(surf)
    renderer = ""
    if ok:
        renderer = str(ctx.functions().glGetString(0x1F01) or "")  # GL_RENDERER
        ctx.doneCurrent()
    return ok, "" if ok else "an OpenGL context was created but could not be made current", renderer


def point_caps(renderer: str) -> tuple[int, int]:
    """(scene points, obstacle points) the 3D view draws at most: fewer on a software
    renderer, whose paints block the GUI thread."""
    soft = any(name in renderer.lower() for name in SOFTWARE_RENDERERS)
    return (SOFTWARE_MAX_POINTS, SOFTWARE_MAX_BLOCKED) if soft else (MAX_POINTS, MAX_BLOCKED)


class Scene3DView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(240, 240)
        self._stack = QStackedLayout(self)
        self.gl = None
        self.items: dict[str, object] = {}
        self.available, self.reason, self.renderer = gl_available()
        self.max_points, self.max_blocked = point_caps(self.renderer)
        if self.available:
            try:
                import pyqtgraph.opengl as gl

                self.gl = gl.GLViewWidget()
                self.gl.setBackgroundColor((28, 29, 33))
                self.gl.setCameraPosition(distance=4.5, elevation=40, azimuth=30)
                self._stack.addWidget(self.gl)
            except Exception as e:  # a missing GL library shows up only on import
                self.available, self.reason, self.gl = False, f"pyqtgraph.opengl failed: {e}", None
        self.notice = QLabel()
        self.notice.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #bbb; background: #1c1d21; padding: 16px;")
        if not self.available:
            self.notice.setText(f"3D view unavailable: no OpenGL ({self.reason}).\n"
                                "The render view, queries, planning and exports work without it.")
            self._stack.addWidget(self.notice)

    # ---- content --------------------------------------------------------------------
    def _put(self, name: str, item) -> None:
        old = self.items.pop(name, None)
        if old is not None:
            self.gl.removeItem(old)
        if item is not None:
            self.gl.addItem(item)
            self.items[name] = item

    def set_scene(self, xyz: np.ndarray, rgb: np.ndarray, centre) -> None:
        if self.gl is None:
            return
        import pyqtgraph.opengl as gl

        keep = _subsample(len(xyz), self.max_points)
        colour = np.concatenate([rgb[keep], np.ones((len(keep), 1))], 1).astype(np.float32)
        item = gl.GLScatterPlotItem(pos=xyz[keep], color=colour, size=3.0, pxMode=True)
        item.setGLOptions("opaque")  # the default additive blending washes a dense cloud out to white
        self._put("scene", item)
        self.gl.opts["center"] = _vec(centre)
        self.gl.update()

    def set_blocked(self, pts: np.ndarray | None) -> None:
        """The inflated occupancy as points from `blocked_points` (None clears it)."""
        if self.gl is None:
            return
        if pts is None:
            self._put("blocked", None)
            return
        import pyqtgraph.opengl as gl

        colour = np.tile(np.array([[0.95, 0.25, 0.2, 0.12]], np.float32), (len(pts), 1))
        item = gl.GLScatterPlotItem(pos=pts, color=colour, size=3.0, pxMode=True)
        item.setGLOptions("translucent")
        self._put("blocked", item)

    def set_path(self, path: np.ndarray | None) -> None:
        if self.gl is None:
            return
        if path is None or len(path) == 0:
            self._put("path", None)
            self._put("ends", None)
            return
        import pyqtgraph.opengl as gl

        lifted = np.asarray(path, dtype=np.float32) + np.array([0, 0, 0.02], np.float32)  # above the floor
        self._put("path", gl.GLLinePlotItem(pos=lifted, color=(0.0, 0.8, 1.0, 1.0), width=3.0, antialias=True))
        ends = np.array([lifted[0], lifted[-1]])
        self._put("ends", gl.GLScatterPlotItem(pos=ends, color=np.array([[0.16, 0.8, 0.27, 1], [0.92, 0.24, 0.24, 1]]),
                                               size=14.0, pxMode=True))

    def set_camera(self, camera) -> None:
        """The render view's frustum: four edges from the eye and the far rectangle."""
        if self.gl is None or camera is None:
            return
        import pyqtgraph.opengl as gl

        c2w, f = camera.c2w, camera.focal
        hw, hh = camera.width / 2 / f, camera.height / 2 / f
        corners_cam = np.array([[sx * hw, sy * hh, -1.0] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
        corners = (corners_cam * FRUSTUM_DEPTH) @ c2w[:3, :3].T + c2w[:3, 3]
        eye = c2w[:3, 3]
        segs = []
        for i in range(4):
            segs += [eye, corners[i], corners[i], corners[(i + 1) % 4]]
        self._put("frustum", gl.GLLinePlotItem(pos=np.array(segs, np.float32), color=(1.0, 0.85, 0.1, 1.0),
                                               width=2.0, mode="lines", antialias=True))

    def save_png(self, path: str | Path) -> Path:
        from tinyserve_core.errors import InputFileError

        if self.gl is None:
            raise InputFileError(str(path), None, f"the 3D view is unavailable ({self.reason})")
        img = self.gl.grabFramebuffer()
        if img.isNull() or not img.save(str(path), "PNG"):
            raise InputFileError(str(path), None, "could not write the 3D view's image")
        return Path(path)


def blocked_points(mask: np.ndarray, lo, voxel: float, cap: int) -> np.ndarray:
    """Where the robot's centre may not go, as at most `cap` points: the inflated occupancy
    drawn on the floor for the ground robot (2D), its boundary only for the gripper (3D).
    Runs on the Scene worker: the gripper's 3D erosion took ~65 ms of the GUI thread."""
    from scipy import ndimage

    if mask.ndim == 2:
        idx = np.argwhere(mask)
        pts = np.column_stack([lo[0] + idx[:, 0] * voxel, lo[1] + idx[:, 1] * voxel, np.full(len(idx), 0.01)])
    else:
        shell = mask & ~ndimage.binary_erosion(mask)
        idx = np.argwhere(shell)
        pts = np.asarray(lo) + idx * voxel
    return pts[_subsample(len(pts), cap)]


def _subsample(n: int, cap: int) -> np.ndarray:
    """Evenly strided indices so a cloud keeps its shape when thinned."""
    return np.arange(n) if n <= cap else np.linspace(0, n - 1, cap).astype(int)


def _vec(p):
    from pyqtgraph import Vector

    return Vector(float(p[0]), float(p[1]), float(p[2]))
