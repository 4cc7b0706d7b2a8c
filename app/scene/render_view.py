"""The render view: the current frame scaled to fit, mouse navigation (left-drag orbits,
right/middle or Shift+left drag pans, the wheel zooms, a click picks), and overlays drawn
in image pixel coordinates: the pick marker, the queried object's projected 3D box, the
planned path with its start and goal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

CLICK_SLOP_PX = 4
BOX_EDGES = ((0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7))


@dataclass
class Overlays:
    pick: tuple[float, float, str] | None = None  # image x, y and its caption
    boxes: list[tuple[np.ndarray, np.ndarray, QColor, str]] = field(default_factory=list)  # uv [8,2], front [8]
    path: tuple[np.ndarray, np.ndarray] | None = None  # uv [N, 2], front [N]


class RenderView(QWidget):
    dragged = Signal(str, float, float)  # "orbit" | "pan", dx, dy in image pixels
    drag_finished = Signal()
    wheeled = Signal(float)  # zoom steps, positive = closer
    clicked = Signal(float, float)  # image pixel coordinates

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(320, 320)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self._img: QImage | None = None
        self._buf: np.ndarray | None = None  # keeps the QImage's memory alive
        self.overlays = Overlays()
        self.hud = ""
        self.message = "loading the scene..."
        self._press = None
        self._last = None
        self._moved = False
        self.paints = 0  # frames painted, for tests and the benchmark

    # ---- content ----------------------------------------------------------------------
    def set_image(self, rgb8: np.ndarray) -> None:
        self._buf = np.ascontiguousarray(rgb8)
        h, w, _ = self._buf.shape
        self._img = QImage(self._buf.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self.message = ""
        self.update()

    def image_size(self) -> tuple[int, int]:
        return (0, 0) if self._img is None else (self._img.width(), self._img.height())

    def image_rect(self) -> QRectF:
        """Where the image lies in the widget: the largest centred rectangle of its aspect."""
        w, h = self.image_size()
        if not w:
            return QRectF(self.rect())
        s = min(self.width() / w, self.height() / h)
        return QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s)

    def to_widget(self, x: float, y: float) -> QPointF:
        r, (w, h) = self.image_rect(), self.image_size()
        return QPointF(r.x() + x * r.width() / max(1, w), r.y() + y * r.height() / max(1, h))

    def to_image(self, pos: QPointF) -> tuple[float, float] | None:
        r, (w, h) = self.image_rect(), self.image_size()
        if not w or not r.contains(pos):
            return None
        return (pos.x() - r.x()) * w / r.width(), (pos.y() - r.y()) * h / r.height()

    def image_scale(self) -> float:
        w, _ = self.image_size()
        return self.image_rect().width() / max(1, w)

    # ---- painting ---------------------------------------------------------------------
    def paintEvent(self, ev):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(32, 33, 36))
        if self._img is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(self.image_rect(), self._img)
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            self._paint_boxes(p)
            self._paint_path(p)
            self._paint_pick(p)
        p.setPen(QColor(230, 230, 230))
        p.setFont(QFont(self.font().family(), 9))
        if self.hud:
            p.drawText(QRectF(8, 4, self.width() - 16, 20), Qt.AlignmentFlag.AlignRight, self.hud)
        if self.message:
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, self.message)
        p.end()
        self.paints += 1

    def _paint_boxes(self, p: QPainter):
        for uv, front, colour, caption in self.overlays.boxes:
            p.setPen(QPen(colour, 2))
            for a, b in BOX_EDGES:
                if front[a] and front[b]:
                    p.drawLine(self.to_widget(*uv[a]), self.to_widget(*uv[b]))
            if front.any() and caption:
                top = uv[front][np.argmin(uv[front][:, 1])]
                _label(p, self.to_widget(*top) + QPointF(0, -6), caption, colour)

    def _paint_path(self, p: QPainter):
        if self.overlays.path is None:
            return
        uv, front = self.overlays.path
        if len(uv) == 0:
            return
        pen = QPen(QColor(0, 200, 255), 3)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        p.setPen(pen)
        path, drawing = QPainterPath(), False
        for (x, y), f in zip(uv, front):
            if not f:
                drawing = False
                continue
            pt = self.to_widget(x, y)
            if drawing:
                path.lineTo(pt)
            else:
                path.moveTo(pt)
                drawing = True
        p.drawPath(path)
        for i, colour, name in ((0, QColor(40, 200, 70), "start"), (len(uv) - 1, QColor(235, 60, 60), "goal")):
            if front[i]:
                c = self.to_widget(*uv[i])
                p.setPen(QPen(QColor(20, 20, 20), 1.5))
                p.setBrush(colour)
                p.drawEllipse(c, 7, 7)
                p.setBrush(Qt.BrushStyle.NoBrush)
                _label(p, c + QPointF(10, -8), name, colour)

    def _paint_pick(self, p: QPainter):
        if self.overlays.pick is None:
            return
        x, y, caption = self.overlays.pick
        c = self.to_widget(x, y)
        p.setPen(QPen(QColor(20, 20, 20), 4))
        p.drawLine(c + QPointF(-9, 0), c + QPointF(9, 0))
        p.drawLine(c + QPointF(0, -9), c + QPointF(0, 9))
        p.setPen(QPen(QColor(255, 230, 0), 2))
        p.drawLine(c + QPointF(-9, 0), c + QPointF(9, 0))
        p.drawLine(c + QPointF(0, -9), c + QPointF(0, 9))
        _label(p, c + QPointF(12, -10), caption, QColor(255, 230, 0))

    # ---- mouse ------------------------------------------------------------------------
    def mousePressEvent(self, ev):
        self._press = self._last = ev.position()
        self._moved = False

    def mouseMoveEvent(self, ev):
        if self._press is None:
            return
        pos = ev.position()
        if not self._moved and (pos - self._press).manhattanLength() < CLICK_SLOP_PX:
            return
        self._moved = True
        s = self.image_scale() or 1.0
        d = (pos - self._last) / s
        self._last = pos
        pan = bool(ev.buttons() & (Qt.MouseButton.RightButton | Qt.MouseButton.MiddleButton)) or \
            bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        self.dragged.emit("pan" if pan else "orbit", d.x(), d.y())

    def mouseReleaseEvent(self, ev):
        if self._press is None:
            return
        if self._moved:
            self.drag_finished.emit()
        elif ev.button() == Qt.MouseButton.LeftButton:
            xy = self.to_image(ev.position())
            if xy is not None:
                self.clicked.emit(*xy)
        self._press = None

    def wheelEvent(self, ev):
        steps = ev.angleDelta().y() / 120.0
        if steps:
            self.wheeled.emit(steps)


def _label(p: QPainter, at: QPointF, text: str, colour: QColor):
    """Text on a dark plate so it reads on any frame."""
    fm = p.fontMetrics()
    w, h = fm.horizontalAdvance(text) + 8, fm.height() + 2
    r = QRectF(at.x(), at.y() - h + 4, w, h)
    p.save()
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(0, 0, 0, 170))
    p.drawRoundedRect(r, 3, 3)
    p.setPen(colour)
    p.drawText(r, Qt.AlignmentFlag.AlignCenter, text)
    p.restore()
