"""Block tables of the running sequences: one row per sequence, one cell per logical
block, drawn exactly like its physical block in the pool view (owner fill by height,
refcount strip), so a shared prefix reads as a run of bright strips down several rows
and a fork as two rows that share all but their last cells. One ImageItem again;
hover names the physical block."""

from __future__ import annotations

import itertools

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QLineF, QPointF, QRectF, Qt
from PySide6.QtGui import QCursor, QFont, QFontMetrics, QPainter, QStaticText
from PySide6.QtWidgets import QToolTip, QVBoxLayout, QWidget

from ..widgets.image_plot import IndexedImageItem, cache_axes, dark_canvas, no_si_scale
from ..widgets.steady_label import SteadyLabel
from . import pool_image as pi

MAX_ROWS = 128
RANGE_STEP = 8
TABLE_CELL = 4          # image pixels per cell side: fill in quarters, like a small pool


def table_cells(rows: list, shape: tuple[int, int] | None = None) -> np.ndarray:
    """int64 [rows, cols] of block ids, -1 past each row's end (one assignment); `shape`
    (at least the rows and the longest row) pads it to a grid, else it fits them."""
    lens = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    if shape is None:
        shape = (len(rows), max(int(lens.max(initial=0)), 1))
    t = np.full(shape[0] * shape[1], -1, np.int64)
    total = int(lens.sum())
    if total:
        if isinstance(rows[0], np.ndarray):
            flat = np.concatenate([np.asarray(r, np.int64) for r in rows])
        else:   # the history's tuples: one pass over the ids, no array per row
            flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, total)
        # entry j of row r lands at r * cols + j: the row's offset in the grid minus
        # where its entries start in `flat`, plus the entry's index in `flat`
        starts = np.cumsum(lens) - lens
        t[np.repeat(np.arange(len(rows)) * shape[1] - starts, lens) + np.arange(total)] = flat
    return t.reshape(shape)


def grid_columns(n: int) -> int:
    """Columns shown for tables up to `n` blocks long: 8, 12, 16, 24, 32, 48, ... (each
    step 1.5x or 1.33x the last), so the tables fill at least 2/3 of the width, and
    tables growing a few blocks a frame (a time-travel drag) rarely need a new grid and
    new axes: steps of 8 refit the view every third frame of a drag at 32K blocks."""
    c = RANGE_STEP
    while c < n:
        c = c * 3 // 2 if (c & (c - 1)) == 0 else c * 4 // 3
    return c


class RowLabelAxis(pg.AxisItem):
    """The tables' left axis: a "seq N" label at the middle of each labelled row. The
    labels change whenever a sequence starts or ends (in a time-travel scrub, most
    frames), and pyqtgraph's general tick layout took ~1 ms to place them; this one maps
    each row onto the axis and measures its text, and paints the labels straight from
    laid-out texts kept per label (pyqtgraph records a QPicture and lays each text out
    again in every paint: ~0.4 ms of each scrub frame)."""

    def __init__(self):
        super().__init__("left")
        self.labels: list[tuple[float, str]] = []
        self._static: dict[str, QStaticText] = {}

    def set_labels(self, labels: list[tuple[float, str]]) -> None:
        """(row centre in view units, text) for each labelled row."""
        self.labels = list(labels)
        self.update()
        # the width only grows: an axis that narrows and widens as sequences come and go
        # lays the plot out again (and repaints it twice) in the frames it changes
        fm = QFontMetrics(self.style["tickFont"] or QFont())
        need = max((fm.horizontalAdvance(t) for _, t in self.labels), default=0)
        need += max(0, self.style["tickLength"]) + self.style["tickTextOffset"][0] + 2
        if need > (self.fixedWidth or 0):
            self.setWidth(need)

    def generateDrawSpecs(self, p):
        if self.style["tickFont"] is not None:
            p.setFont(self.style["tickFont"])
        b = self.mapRectFromParent(self.geometry())
        right = b.right()
        axis = (self.pen(), QPointF(right - 1, b.top() - 1), QPointF(right - 1, b.bottom() + 1))
        vb = self.linkedView()
        if vb is None:
            return axis, [], []
        # view y -> this axis' y (an affine map: the rows are evenly spaced)
        y0 = self.mapFromItem(vb.childGroup, QPointF(0, 0)).y()
        dy = self.mapFromItem(vb.childGroup, QPointF(0, 1)).y() - y0
        fm = QFontMetrics(p.font())
        h, tl = fm.height(), self.style["tickLength"]
        gap = max(0, tl) + self.style["tickTextOffset"][0]
        pen, flags = self.tickPen(), int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                                         | Qt.TextFlag.TextDontClip)
        ticks, texts = [], []
        last = None                       # the text rectangle of the last label kept
        for v, text in self.labels:
            y = y0 + v * dy
            if not b.top() <= y <= b.bottom():
                continue
            w = fm.horizontalAdvance(text)
            rect = QRectF(right - gap - w, y - h / 2, w, h)
            if last is not None and abs(rect.center().y() - last.center().y()) < h:
                continue                  # rows closer than a line (a view not laid out yet)
            last = rect
            ticks.append((pen, QPointF(right, y), QPointF(right - tl, y)))
            texts.append((rect, flags, text))
        return axis, ticks, texts

    def paint(self, p, *args) -> None:
        if self.style["tickFont"] is not None:
            p.setFont(self.style["tickFont"])
        (pen, a, b), ticks, texts = self.generateDrawSpecs(p)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        p.setPen(pen)
        p.drawLine(a, b)
        if ticks:
            p.setPen(ticks[0][0])
            p.drawLines([QLineF(a, b) for _, a, b in ticks])
        p.setPen(self.textPen())
        if len(self._static) > 4 * MAX_ROWS:      # sequence ids only grow: drop the old ones
            self._static.clear()
        for rect, _, text in texts:               # rect: the text's advance x one line, right-aligned
            st = self._static.get(text)
            if st is None:
                st = self._static[text] = QStaticText(text)
                st.setTextFormat(Qt.TextFormat.PlainText)
            p.drawStaticText(rect.topLeft(), st)


class BlockTablesView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.lut = pi.build_palette()
        self.argb = IndexedImageItem.argb_table(self.lut)
        self.seq_ids: list[int] = []
        self.table = np.zeros((0, 0), np.int64)
        self.refs = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.header = SteadyLabel("Block tables: no running sequences")   # set every step
        lay.addWidget(self.header)
        self.glw = dark_canvas()
        self.plot = self.glw.addPlot(axisItems={"left": RowLabelAxis()})
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "logical block (page) index")
        no_si_scale(self.plot)
        cache_axes(self.plot)
        self.plot.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)
        # the same palette-index image as the pool (an ARGB32 QImage Qt scales as is)
        self.image = IndexedImageItem()
        self.image.setVisible(False)
        self.plot.addItem(self.image)
        lay.addWidget(self.glw, 1)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self._key = None
        self.channels = pi.BlockChannels(TABLE_CELL)
        self.grid: pi.CellGrid | None = None
        self._ticks_for: tuple | None = None
        self._line_h = QFontMetrics(self.font()).height()

    def apply_snapshot(self, snap) -> None:
        tables = snap.tables
        seqs = sorted(tables)[:MAX_ROWS]
        rows = [tables[s] for s in seqs]
        key = (tuple(seqs), tuple(len(r) for r in rows), snap.step)
        if key == self._key:
            return
        self._key = key
        p = snap.pool
        self.refs = p.ref_cnt
        old_seqs = self.seq_ids
        self.seq_ids = seqs
        longest = max(key[1], default=0)
        if len(seqs):
            # only the blocks the tables point at: a cell per table entry, not per block
            # the grid (and the view's range) in steps: a table growing by a block neither
            # refits the view (both axes redrawn) nor redraws all rows
            shape = (-(-len(seqs) // RANGE_STEP) * RANGE_STEP, grid_columns(longest))
            if self.grid is None or (self.grid.rows, self.grid.cols) != shape:
                self.grid = pi.CellGrid(*shape, TABLE_CELL)
                self.plot.setRange(xRange=(0, shape[1]), yRange=(0, shape[0]), padding=0)
                # now, not in the paint: pyqtgraph moves the items when it paints, which
                # asks for a second paint of the whole view
                self.plot.vb.updateMatrix()
            else:
                self._move_rows(old_seqs, seqs)
            cells = table_cells(rows, shape)
            self.table = cells[: len(seqs), : max(longest, 1)]
            flat = cells.reshape(-1)
            # the entries' cell channels (an empty cell, -1, is PAD): in time travel from
            # every block's channels, updated for the blocks the step changed
            self.grid.update_channels(self.channels.at(flat, p.ref_cnt, p.owner, p.fill, p.evictable,
                                                       getattr(snap, "changes", None)))
            dirty = self.grid.take_dirty()
            g = self.grid
            if dirty is pi.FULL:
                self.image.set_indices(g.image, self.argb, g.cols, g.rows)
            elif dirty.size:
                rr, cc = pi.cell_pixel_index(dirty, g.cols, g.cell)
                self.image.update_pixels(rr, cc, g.image[rr, cc])
            self.image.setVisible(True)
            ids = flat[flat >= 0]
        else:
            self.table = np.zeros((0, 1), np.int64)
            self.image.setVisible(False)
            ids = np.zeros(0, np.int64)
        self._set_ticks()
        n_shared = int((p.ref_cnt[ids] > 1).sum())
        self.header.setText(
            f"Block tables: {len(tables)} running sequences"
            + (f" (first {MAX_ROWS} shown)" if len(tables) > MAX_ROWS else "")
            + f" | {int(ids.size)} table entries, {n_shared} point at shared blocks (refcount > 1)")

    def _move_rows(self, old: list[int], new: list[int]) -> None:
        """Each sequence's row moved to where it is now (a sequence that ends or starts
        shifts every row after it): the cells then redrawn are only those whose block
        changed, not every shifted row."""
        g, px = self.grid, self.image.pixels()
        if old == new or px is None or px.shape != g.image.shape:
            return
        at = {s: i for i, s in enumerate(old)}
        src = np.full(g.rows, -1, np.int64)
        src[: len(new)] = [at.get(s, -1) for s in new]
        g.move_rows(src)
        px[...] = g.moved_pixels(px, src, self.argb[pi.PAD])   # in the buffer Qt draws
        self.image.update()

    def _set_ticks(self) -> None:
        """One label per ~1.6 text lines of the axis as it is now, so they never stack.
        Set only when the rows or the height change: new ticks redraw the axis."""
        room = max(1, int(self.plot.vb.height() / (1.6 * self._line_h)))
        step = max(1, -(-len(self.seq_ids) // room))
        shown = (self.seq_ids[::step], step)
        if self._ticks_for == shown:
            return
        self._ticks_for = shown
        self.plot.getAxis("left").set_labels([(i + 0.5, f"seq {s}") for i, s in
                                              zip(range(0, len(self.seq_ids), step), shown[0])])

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._set_ticks()

    def _on_move(self, pos):
        if not self.seq_ids:
            return
        pt = self.plot.vb.mapSceneToView(pos)
        r, c = int(np.floor(pt.y())), int(np.floor(pt.x()))
        if 0 <= r < self.table.shape[0] and 0 <= c < self.table.shape[1] and self.table[r, c] >= 0:
            b = int(self.table[r, c])
            ref = int(self.refs[b]) if self.refs is not None else -1
            sharers = [str(self.seq_ids[i]) for i in np.flatnonzero((self.table == b).any(axis=1))]
            QToolTip.showText(QCursor.pos(),
                              f"seq {self.seq_ids[r]}, logical {c} -> physical block {b}\n"
                              f"refcount {ref}; running sharers: {', '.join(sharers)}", self.glw)
        else:
            QToolTip.hideText()
