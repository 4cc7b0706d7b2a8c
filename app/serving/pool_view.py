"""Block pool view: every physical block as one cell of ONE ImageItem drawn through a
lookup table (pool_image.py), with CoW links as one line item, hover tooltips and
click-to-inspect. Per frame: one vectorised index computation and one setImage."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from ..widgets.image_plot import add_image_plot, dark_canvas
from ..widgets.legend import ColourLegend, flexible
from . import pool_image as pi

LINK_S = 1.2   # seconds a CoW link stays drawn


class BlockPoolView(QWidget):
    block_clicked = Signal(int)
    block_hovered = Signal(int)     # asks for block_info; the tooltip fills in on reply

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lut = pi.build_palette()
        self.animator: pi.PoolAnimator | None = None
        self.pool = None
        self._links: list[tuple[int, int, float]] = []
        self._hover_id = -1
        self._info: dict[int, dict] = {}
        self._needs_render = True
        self.last_image: np.ndarray | None = None
        self.frames = 0

        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.header = QLabel("Block pool: waiting for the engine")
        flexible(self.header)
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.header)
        self.glw = dark_canvas()
        self.plot, self.image = add_image_plot(self.glw, "block id / row width", "block id mod row width")
        self.plot.setAspectLocked(True)
        self.plot.hideButtons()
        self.links = pg.PlotCurveItem(pen=pg.mkPen((110, 255, 255), width=2), connect="pairs")
        self.plot.addItem(self.links)
        self.hover_box = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=1.5))
        self.plot.addItem(self.hover_box)
        lay.addWidget(self.glw, 1)
        L = self.lut
        flash = lambda name: tuple(pi.FLASHES[name])
        lay.addWidget(ColourLegend([
            (pi.FREE_RGB, "free"),
            (pi.CACHED_RGB, "cached-free (evictable)"),
            (L[pi.OWNER0 + 0 * pi.NUM_SHADES + 3], "owned: hue = request,"),
            (L[pi.OWNER0 + 0 * pi.NUM_SHADES + 0], "shade = fill"),
            (pi.SHARED_RGB[0], "shared (ref 2 .. 5+)"),
            (flash("cow"), "copy-on-write"),
            (flash("evict"), "evict"),
            (flash("preempt"), "preempt"),
        ]))
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self.glw.scene().sigMouseClicked.connect(self._on_click)

    # ---- data ---------------------------------------------------------------------
    def apply_snapshot(self, snap, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if self.animator is None or self.animator.num_blocks != snap.num_blocks:
            self.animator = pi.PoolAnimator(snap.num_blocks)
            self._links.clear()
            self._info.clear()
            a = self.animator
            self.plot.setRange(xRange=(0, a.cols), yRange=(0, a.rows), padding=0.02)
            self.plot.setLabel("left", f"row = block id // {a.cols}")
            self.plot.setLabel("bottom", f"column = block id % {a.cols}")
        p = snap.pool
        self.pool = p
        base = pi.base_index(p.ref_cnt, p.owner, p.fill, p.evictable)
        self.animator.apply(base, snap.pool_events, now)
        for s, d in snap.pool_events.cow.tolist():
            self._links.append((s, d, now))
        if len(self._links) > 256:
            self._links = self._links[-256:]
        self._info.clear()   # block contents changed; hover asks again
        used = int((p.ref_cnt > 0).sum())
        self.header.setText(
            f"Block pool: {snap.num_blocks:,} blocks x {snap.block_size} tokens | "
            f"used {used:,} ({100.0 * used / max(1, snap.num_blocks):.1f}%) | "
            f"shared {int((p.ref_cnt > 1).sum()):,} | cached-free {int(p.evictable.sum()):,} | "
            f"step {snap.step} | t = {snap.clock:.2f} s")
        self._needs_render = True

    def render(self, now: float | None = None) -> bool:
        """Draw the frame for `now`; returns False when nothing needed drawing."""
        if self.animator is None:
            return False
        now = time.perf_counter() if now is None else now
        a = self.animator
        animating = bool((a.kind > 0).any())
        self._links = [l for l in self._links if now - l[2] < LINK_S]
        if not (self._needs_render or animating or self._links):
            return False
        img = a.frame(now)
        self.last_image = img
        self.image.setImage(img, levels=(0, self.lut.shape[0]), lut=self.lut, autoLevels=False)
        self._draw_links()
        self._needs_render = False
        self.frames += 1
        return True

    def _draw_links(self):
        if not self._links:
            self.links.setData([], [])
            return
        ids = np.array([(s, d) for s, d, _ in self._links], np.int64).reshape(-1)
        r, c = self.animator.cell_of(ids)
        self.links.setData(c + 0.5, r + 0.5)

    def link_count(self) -> int:
        return len(self._links)

    # ---- interaction --------------------------------------------------------------
    def block_at(self, scene_pos) -> int:
        if self.animator is None:
            return -1
        pt = self.plot.vb.mapSceneToView(scene_pos)
        col, row = int(np.floor(pt.x())), int(np.floor(pt.y()))
        a = self.animator
        if not (0 <= col < a.cols and 0 <= row < a.rows):
            return -1
        bid = row * a.cols + col
        return bid if bid < a.num_blocks else -1

    def _on_move(self, pos):
        bid = self.block_at(pos)
        if bid != self._hover_id:
            self._hover_id = bid
            self._draw_hover_box(bid)
            if bid >= 0:
                self.block_hovered.emit(bid)
        if bid >= 0:
            QToolTip.showText(QCursor.pos(), self.tooltip_text(bid), self.glw)
        else:
            QToolTip.hideText()

    def _draw_hover_box(self, bid):
        if bid < 0:
            self.hover_box.setData([], [])
            return
        r, c = divmod(bid, self.animator.cols)
        self.hover_box.setData([c, c + 1, c + 1, c, c], [r, r, r + 1, r + 1, r])

    def _on_click(self, ev):
        bid = self.block_at(ev.scenePos())
        if bid >= 0 and ev.button() == Qt.MouseButton.LeftButton:
            self.block_clicked.emit(bid)

    def set_block_info(self, block_id: int, info: dict) -> None:
        self._info[block_id] = info
        if block_id == self._hover_id and QToolTip.isVisible():
            QToolTip.showText(QCursor.pos(), self.tooltip_text(block_id), self.glw)

    def tooltip_text(self, bid: int) -> str:
        p = self.pool
        lines = [f"block {bid}"]
        if p is not None and bid < p.ref_cnt.shape[0]:
            ref = int(p.ref_cnt[bid])
            state = ("shared" if ref > 1 else "in use" if ref == 1
                     else "cached-free (evictable)" if p.evictable[bid] else "free")
            lines.append(f"refcount {ref} ({state}), fill {p.fill[bid] * 100:.0f}%")
        info = self._info.get(bid)
        if info is None:
            lines.append("owners, hash, text: asking the engine...")
        else:
            lines.extend(format_block_info(info, short=True))
        return "\n".join(lines)


def format_block_info(info: dict, short: bool = False) -> list[str]:
    owners = info.get("owners") or ()
    h = info.get("block_hash")
    lines = [f"owners (seq ids): {', '.join(map(str, owners)) or 'none'}",
             f"hash: {('%016x' % (h & (2**64 - 1))) if isinstance(h, int) else 'none'}"]
    if not short:
        lines.append(f"in free queue: {info.get('in_free_queue')}, evictable: {info.get('evictable')}")
        toks = info.get("token_ids")
        lines.append(f"token ids: {list(toks) if toks is not None else 'unknown'}")
    text = info.get("text")
    if text is not None:
        t = text if not short or len(text) < 160 else text[:157] + "..."
        lines.append("text: " + repr(t))
    return lines
