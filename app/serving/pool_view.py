"""Block pool view: every physical block as a cell of ONE ImageItem drawn through a
lookup table (pool_image.py: owner fill by height + refcount strip), the events of the
last second as fading white glyphs, copy-on-write as fading arrows, the refcount as a
number once the cells are big enough. Wheel zooms, drag pans (within the pool), a
double click shows the whole pool again, the axes give block ids; hover tooltips and click-to-inspect give the block's details."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QToolTip, QVBoxLayout, QWidget

from ..widgets import palette as pal
from ..widgets.glyph_layer import GlyphLayer
from ..widgets.image_plot import IndexedImageItem, cache_axes, dark_canvas, no_si_scale
from ..widgets.pool_legend import PoolLegend
from ..widgets.steady_label import SteadyLabel
from . import pool_image as pi

NUMBER_MIN_PX = 22     # cells at least this wide show their refcount as a number
MAX_NUMBERS = 400      # text items kept (a zoomed-in view shows fewer cells anyway)


class BlockIdAxis(pg.AxisItem):
    """Integer ticks only, named as block ids: the left axis gives the first id of each
    row (row * cols), the bottom one the offset in the row. (No callback into the view:
    a reference cycle through a Qt item can crash when the garbage collector breaks it.)"""

    def __init__(self, orientation):
        super().__init__(orientation)
        self.cols = 1

    def tickValues(self, minVal, maxVal, size):
        out = []
        for spacing, vals in super().tickValues(minVal, maxVal, size):
            vals = [v for v in vals if float(v).is_integer()]
            if vals:
                out.append((max(1.0, spacing), vals))
        return out

    def tickStrings(self, values, scale, spacing):
        if self.orientation == "left":
            return [f"{int(v) * self.cols:,}" for v in values]
        return [f"+{int(v)}" for v in values]


class BlockPoolView(QWidget):
    block_clicked = Signal(int)
    block_hovered = Signal(int)     # asks for block_info; the tooltip fills in on reply

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lut = pi.build_palette()
        self.animator: pi.PoolAnimator | None = None
        self.pool = None
        self.block_size = 1
        self._hover_id = -1
        self._info: dict[int, dict] = {}
        self.past_step: int | None = None   # set while time travel shows a past step
        self._needs_render = True
        self._numbers_stale = True
        self.last_image: np.ndarray | None = None
        self.frames = 0
        self._last_draw_t = 0.0

        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        # set every frame: a SteadyLabel does not lay the window out again each time
        self.header = SteadyLabel("Block pool: waiting for the engine")
        lay.addWidget(self.header)
        self.glw = dark_canvas()
        self.left_axis = BlockIdAxis("left")
        self.bottom_axis = BlockIdAxis("bottom")
        self.plot = self.glw.addPlot(axisItems={"left": self.left_axis, "bottom": self.bottom_axis})
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        no_si_scale(self.plot)
        cache_axes(self.plot)
        self.plot.hideButtons()
        self.plot.setLabel("left", "first block id of the row")
        self.plot.setLabel("bottom", "block id = row start + column")
        self.image = IndexedImageItem()
        self.argb = IndexedImageItem.argb_table(self.lut)
        self.plot.addItem(self.image)
        # every event glyph in one item (an atlas of the (event kind, fade step) symbols):
        # sixteen scatter items cost ~0.25 ms each in every paint of the pool
        self.glyph_styles: dict[tuple[int, int], int] = {}
        styles = []
        for k, name in enumerate(pi.EVENT_KINDS):
            if name == "cow":
                continue
            for step in range(pal.FADE_STEPS):
                a = 255 * (pal.FADE_STEPS - step) // pal.FADE_STEPS
                self.glyph_styles[(k, a)] = len(styles)
                styles.append((pal.EVENT_GLYPHS[name], pg.mkPen((*pal.EVENT_RGB, a), width=1.6)))
        # the same as a table (event kind, alpha) -> style, -1 for none: one gather a frame
        self.style_of = np.full((len(pi.EVENT_KINDS), 256), -1, np.int64)
        for (k, a), i in self.glyph_styles.items():
            self.style_of[k, a] = i
        self.glyphs = GlyphLayer(styles, 10.0, QRectF(0, 0, 1, 1))
        self.plot.addItem(self.glyphs)
        # CoW arrows: one line item per fade step (a curve has one pen)
        self.arrows = []
        for k in range(pal.FADE_STEPS):
            a = 255 * (pal.FADE_STEPS - k) // pal.FADE_STEPS
            item = pg.PlotCurveItem(pen=pg.mkPen((*pal.EVENT_RGB, a), width=2), connect="pairs")
            item.setVisible(False)
            self.plot.addItem(item)
            self.arrows.append(item)
        self.hover_box = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=1.5))
        self.hover_box.setVisible(False)      # shown while the mouse is over a block
        self.plot.addItem(self.hover_box)
        self._numbers: list[pg.TextItem] = []
        lay.addWidget(self.glw, 1)
        self.legend = PoolLegend()
        lay.addWidget(self.legend)
        self.plot.vb.sigRangeChanged.connect(self._range_changed)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self.glw.scene().sigMouseClicked.connect(self._on_click)

    # ---- data ---------------------------------------------------------------------
    def apply_snapshot(self, snap, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if self.animator is None or self.animator.num_blocks != snap.num_blocks:
            self.animator = a = pi.PoolAnimator(snap.num_blocks)
            self._info.clear()
            self.left_axis.cols = a.cols
            vb = self.plot.vb
            # pan and zoom stay inside the pool: the y range always fits it
            vb.setLimits(xMin=0, xMax=a.cols, yMin=0, yMax=a.rows,
                         minXRange=min(4, a.cols), minYRange=min(2, a.rows))
            self.plot.setRange(xRange=(0, a.cols), yRange=(0, a.rows), padding=0)
            self.glyphs.set_bounds(QRectF(0, 0, a.cols, a.rows))
        p = snap.pool
        self.pool = p
        self.block_size = snap.block_size
        self.animator.apply(p.ref_cnt, p.owner, p.fill, p.evictable, snap.pool_events, now,
                            getattr(snap, "changes", None))
        self._info.clear()   # block contents changed; hover asks again
        used = int((p.ref_cnt > 0).sum())
        self.header.setText(
            f"Block pool: {snap.num_blocks:,} blocks x {snap.block_size} tokens | "
            f"used {used:,} ({100.0 * used / max(1, snap.num_blocks):.1f}%) | "
            f"shared {int((p.ref_cnt > 1).sum()):,} | cached-free {int(p.evictable.sum()):,} | "
            f"step {snap.step} | t = {snap.clock:.2f} s")
        self._needs_render = True
        self._numbers_stale = True

    def render(self, now: float | None = None) -> bool:
        """Draw the frame for `now`; returns False when nothing needed drawing."""
        a = self.animator
        if a is None:
            return False
        now = time.perf_counter() if now is None else now
        self._last_draw_t = now
        events = a.animating() or self.glyph_count() > 0 or self.link_count() > 0
        if not (self._needs_render or events or self._numbers_stale):
            return False
        if self._needs_render:
            self.last_image = a.image
            dirty = a.take_dirty()
            if dirty is pi.FULL:
                self.image.set_indices(a.image, self.argb, a.cols, a.rows)
            elif dirty.size:
                rr, cc = pi.cell_pixel_index(dirty, a.cols, a.cell)
                self.image.update_pixels(rr, cc, a.image[rr, cc])
        self._draw_events(now)
        if self._numbers_stale:
            self._draw_numbers()
        self._needs_render = False
        self.frames += 1
        return True

    def glyph_count(self) -> int:
        return len(self.glyphs)

    def cell_px(self) -> float:
        """On-screen width of one cell in pixels."""
        px = self.plot.vb.viewPixelSize()[0]
        return 1.0 / px if px > 0 else 0.0

    def _draw_events(self, now: float) -> None:
        block, dst, kind, alpha = self.animator.live_events(now)
        cow = kind == pi.EVENT_KINDS.index("cow")
        # the newest only (events are appended in time order)
        glyph = np.flatnonzero(~cow)[-pi.MAX_GLYPHS:]
        arrow = np.flatnonzero(cow)[-pi.MAX_ARROWS:]
        self._draw_arrows(block[arrow], dst[arrow], alpha[arrow])
        block, kind, alpha = block[glyph], kind[glyph], alpha[glyph]
        size = float(np.clip(self.cell_px() * 0.8, 7, 16))
        if abs(size - self.glyphs.size) <= 0.5:
            size = self.glyphs.size
        style = self.style_of[kind, alpha]
        shown = style >= 0
        r, c = self.animator.cell_of(block[shown])
        self.glyphs.set_glyphs(c + 0.5, r + 0.5, style[shown], size)

    def _draw_arrows(self, src, dst, alpha) -> None:
        """Each arrow: the shaft src -> dst and two head strokes at dst, in cell units."""
        a = self.animator
        head = max(0.35, 8.0 / max(self.cell_px(), 1e-6))
        for k, item in enumerate(self.arrows):
            lo = 255 * (pal.FADE_STEPS - k) // pal.FADE_STEPS
            m = (alpha == lo) & (alpha > 0)
            item.setVisible(bool(m.any()))
            if not m.any():
                if item.xData is not None and item.xData.size:
                    item.setData([], [])
                continue
            (r0, c0), (r1, c1) = a.cell_of(src[m]), a.cell_of(dst[m])
            x0, y0, x1, y1 = c0 + 0.5, r0 + 0.5, c1 + 0.5, r1 + 0.5
            dx, dy = x1 - x0, y1 - y0
            ln = np.maximum(np.hypot(dx, dy), 1e-6)
            ux, uy = dx / ln, dy / ln
            pts = []
            for sx, sy, ex, ey in ((x0, y0, x1, y1),
                                   (x1, y1, x1 - head * (ux + 0.5 * uy), y1 - head * (uy - 0.5 * ux)),
                                   (x1, y1, x1 - head * (ux - 0.5 * uy), y1 - head * (uy + 0.5 * ux))):
                pts.append(np.stack([np.stack([sx, sy], 1), np.stack([ex, ey], 1)], 1))
            xy = np.concatenate(pts).reshape(-1, 2)
            item.setData(xy[:, 0], xy[:, 1])

    def link_count(self) -> int:
        """CoW arrows drawn now."""
        return sum(int(item.xData.size // 6) if item.xData is not None else 0 for item in self.arrows)

    def _range_changed(self, *_):
        self._numbers_stale = True

    def _draw_numbers(self) -> None:
        """Refcounts as numbers in the cells once they are big enough to hold them."""
        self._numbers_stale = False
        a, p = self.animator, self.pool
        ids = np.zeros(0, np.int64)
        if p is not None and self.cell_px() >= NUMBER_MIN_PX:
            (x0, x1), (y0, y1) = self.plot.vb.viewRange()
            c = np.arange(max(0, int(x0)), min(a.cols, int(np.ceil(x1))))
            r = np.arange(max(0, int(y0)), min(a.rows, int(np.ceil(y1))))
            ids = (r[:, None] * a.cols + c[None, :]).reshape(-1)
            ids = ids[ids < a.num_blocks]
            ids = ids[p.ref_cnt[ids] > 0][:MAX_NUMBERS]
        while len(self._numbers) < ids.size:
            t = pg.TextItem("", anchor=(0.5, 0.5))
            self.plot.addItem(t)
            self._numbers.append(t)
        for i, t in enumerate(self._numbers):
            if i < ids.size:
                bid = int(ids[i])
                r, c = divmod(bid, a.cols)
                rgb = pal.owner_rgb(int(p.owner[bid]))
                light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140
                t.setColor((0, 0, 0) if light else (255, 255, 255))
                t.setText(pal.refcount_label(int(p.ref_cnt[bid])))
                t.setPos(c + 0.45, r + 0.5)
                t.setVisible(True)
            else:
                t.setVisible(False)

    def numbers_shown(self) -> list[str]:
        return [t.toPlainText() for t in self._numbers if t.isVisible()]

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
            self.hover_box.setVisible(False)
            return
        r, c = divmod(bid, self.animator.cols)
        self.hover_box.setData([c, c + 1, c + 1, c, c], [r, r, r + 1, r + 1, r])
        self.hover_box.setVisible(True)

    def fit(self) -> None:
        """The whole pool in view (a double click), after wheel zoom and drag."""
        if self.animator is not None:
            self.plot.setRange(xRange=(0, self.animator.cols), yRange=(0, self.animator.rows), padding=0)

    def _on_click(self, ev):
        if ev.double():
            self.fit()
            return
        bid = self.block_at(ev.scenePos())
        if bid >= 0 and ev.button() == Qt.MouseButton.LeftButton:
            self.block_clicked.emit(bid)

    def set_block_info(self, block_id: int, info: dict) -> None:
        self._info[block_id] = info
        if block_id == self._hover_id and QToolTip.isVisible():
            QToolTip.showText(QCursor.pos(), self.tooltip_text(block_id), self.glw)

    def tooltip_text(self, bid: int) -> str:
        p = self.pool
        lines = [f"block {bid:,}"]
        if p is not None and bid < p.ref_cnt.shape[0]:
            ref = int(p.ref_cnt[bid])
            tokens = int(round(float(p.fill[bid]) * self.block_size))
            lines.append(f"refcount {ref} ({block_state(ref, bool(p.evictable[bid]))})")
            lines.append(f"fill {tokens} of {self.block_size} tokens")
        if self.past_step is not None:   # the engine knows its present only
            lines.append(f"as at step {self.past_step} (time travel; End or L: live)")
            return "\n".join(lines)
        info = self._info.get(bid)
        if info is None:
            lines.append("owners, hash, text: asking the engine...")
        else:
            lines.extend(format_block_info(info, short=True))
        return "\n".join(lines)

    def details_text(self, bid: int, info: dict) -> str:
        """The Block details panel: everything known of one block."""
        return f"block {bid:,}\n" + "\n".join(format_block_info(info, block_size=self.block_size))


def block_state(ref: int, evictable: bool) -> str:
    return (f"shared by {ref} sequences" if ref > 1 else "in use by one sequence" if ref == 1
            else "cached-free: keeps its hash, evictable" if evictable else "free")


def format_block_info(info: dict, short: bool = False, block_size: int | None = None) -> list[str]:
    owners = info.get("owners") or ()
    h = info.get("block_hash")
    lines = []
    if not short:
        ref = int(info.get("ref_cnt", 0))
        lines.append(f"refcount: {ref} ({block_state(ref, bool(info.get('evictable')))})")
        fill = info.get("fill")
        if fill is not None:
            lines.append(f"fill: {fill} of {block_size} tokens" if block_size else f"fill: {fill} tokens")
    lines += [f"owners (seq ids): {', '.join(map(str, owners)) or 'none'}",
              f"hash: {('%016x' % (h & (2**64 - 1))) if isinstance(h, int) else 'none'}"]
    if not short:
        lines.append(f"cached (in the free queue with a hash): {bool(info.get('in_free_queue')) and h is not None}, "
                     f"evictable: {info.get('evictable')}")
        toks = info.get("token_ids")
        lines.append(f"token ids: {list(toks) if toks is not None else 'unknown'}")
    text = info.get("text")
    if text is not None:
        t = text if not short or len(text) < 160 else text[:157] + "..."
        lines.append("text: " + repr(t))
    return lines
