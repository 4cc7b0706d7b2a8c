"""The server's live blocks as one ImageItem (the RGBA image comes prepainted from the
worker: a frame here is one setImage), one band per rank and medium named on the left
axis, a hover box, and a selection outline (events and selection are outlines, never
fills: the fill is the prefix tree)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QToolTip, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..widgets.image_plot import add_image_plot, dark_canvas
from ..widgets.legend import flexible, swatch_html
from .block_image import DIM, EMPTY_RGB, SHADES, TREE_RGB, BlockImage


def _box(r: int, c: int) -> tuple[list[float], list[float]]:
    return [c, c + 1, c + 1, c, c], [r, r, r + 1, r + 1, r]


class BlockMapView(QWidget):
    block_hovered = Signal(int)        # slot (-1: none)
    block_clicked = Signal(int)
    shade_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.image_data: BlockImage | None = None
        self.selected = -1
        self._hover = -1
        self.frames = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        top = QHBoxLayout()
        self.header = flexible(QLabel("Block map: not attached (File > Attach...)"))
        top.addWidget(self.header, 1)
        top.addWidget(QLabel("shade by"))
        self.shade = QComboBox()
        for s in SHADES:
            self.shade.addItem(s, s)
        self.shade.setToolTip("brightness: age (new blocks bright) or reuse (often re-stored bright)")
        self.shade.activated.connect(lambda _i: self.shade_changed.emit(self.shade.currentData()))
        top.addWidget(self.shade)
        lay.addLayout(top)
        self.glw = dark_canvas()
        self.plot, self.image = add_image_plot(self.glw, "rank / medium", "block (slot order)")
        self.plot.hideButtons()
        self.plot.setAspectLocked(True)          # square cells, as the serving pool view
        self.hover_box = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=1.2))
        self.sel_box = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=2.5))
        self.plot.addItem(self.hover_box)
        self.plot.addItem(self.sel_box)
        lay.addWidget(self.glw, 1)
        self.legend = flexible(QLabel())
        lay.addWidget(self.legend)
        self._legend_for("age", 0.0)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self.glw.scene().sigMouseClicked.connect(self._on_click)

    def _legend_for(self, shade: str, top: float) -> None:
        bright = tuple(TREE_RGB[0].astype(int))
        dim = tuple((TREE_RGB[0] * DIM).astype(int))
        what = (f"bright = new .. dim = {top:.0f} s old" if shade == "age"
                else f"dim = never re-stored .. bright = {top:.0f} re-stores")
        tree = "".join(f'<span style="color: rgb{tuple(int(v) for v in TREE_RGB[i])};">&#9632;</span>'
                       for i in range(len(TREE_RGB)))
        self.legend.setText(f"fill = prefix tree {tree} &nbsp;&nbsp; {swatch_html(bright, '')}"
                            f"&#8594;{swatch_html(dim, what)} &nbsp;&nbsp; {swatch_html(EMPTY_RGB, 'no block')}"
                            f" &nbsp;&nbsp; white outline = selected")

    def apply(self, img: BlockImage, header: str) -> None:
        """Show a new prepainted image (the one setImage of a frame)."""
        first = self.image_data is None or self.image_data.rgba.shape != img.rgba.shape
        self.image_data = img
        self.image.setImage(img.rgba, autoLevels=False, levels=None)
        if first:
            rows, w = img.rgba.shape[:2]
            self.plot.setRange(xRange=(0, w), yRange=(0, rows), padding=0.02)
        ticks = [(b.row0 + b.rows / 2.0, f"r{b.rank} {b.medium}") for b in img.bands]
        self.plot.getAxis("left").setTicks([ticks, []])
        self._legend_for(img.shade, img.shade_max)
        self.header.setText(header)
        self._outline(self.sel_box, self.selected)
        self.frames += 1

    def _outline(self, item: pg.PlotCurveItem, slot: int) -> None:
        cell = self.image_data.cell_of(slot) if (self.image_data is not None and slot >= 0) else None
        if cell is None:
            item.setData([], [])
        else:
            item.setData(*_box(*cell))

    def slot_at(self, scene_pos) -> int:
        if self.image_data is None:
            return -1
        pt = self.plot.vb.mapSceneToView(scene_pos)
        return self.image_data.slot_at(int(np.floor(pt.y())), int(np.floor(pt.x())))

    def _on_move(self, pos) -> None:
        slot = self.slot_at(pos)
        if slot != self._hover:
            self._hover = slot
            self._outline(self.hover_box, slot)
            self.block_hovered.emit(slot)
            if slot < 0:
                QToolTip.hideText()

    @property
    def hovered(self) -> int:
        return self._hover

    def show_tip(self, text: str) -> None:
        """The hovered block's answer from the worker (it owns the model)."""
        QToolTip.showText(QCursor.pos(), text, self.glw)

    def _on_click(self, ev) -> None:
        slot = self.slot_at(ev.scenePos())
        if ev.button() == Qt.MouseButton.LeftButton:
            self.select(slot)

    def select(self, slot: int) -> None:
        self.selected = slot
        self._outline(self.sel_box, slot)
        if slot >= 0:
            self.block_clicked.emit(slot)
