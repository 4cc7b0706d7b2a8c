"""Block tables of the running sequences: one row per sequence, one cell per logical
block, drawn exactly like its physical block in the pool view (owner fill by height,
refcount strip), so a shared prefix reads as a run of bright strips down several rows
and a fork as two rows that share all but their last cells. One ImageItem again;
hover names the physical block."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QCursor, QFontMetrics
from PySide6.QtWidgets import QToolTip, QVBoxLayout, QWidget

from ..widgets.image_plot import IndexedImageItem, dark_canvas, no_si_scale
from ..widgets.steady_label import SteadyLabel
from . import pool_image as pi

MAX_ROWS = 128
RANGE_STEP = 8
TABLE_CELL = 4          # image pixels per cell side: fill in quarters, like a small pool


def table_matrix(rows: list) -> np.ndarray:
    """int64 [len(rows), longest] of block ids, -1 past each row's end (one assignment)."""
    lens = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    t = np.full((len(rows), max(int(lens.max(initial=0)), 1)), -1, np.int64)
    if lens.sum():
        flat = np.concatenate([np.asarray(r, np.int64) for r in rows])
        t[np.repeat(np.arange(len(rows)), lens), np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)] = flat
    return t


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
        self.plot = self.glw.addPlot()
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "logical block (page) index")
        no_si_scale(self.plot)
        self.plot.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)
        # the same palette-index image as the pool (an ARGB32 QImage Qt scales as is)
        self.image = IndexedImageItem()
        self.image.setVisible(False)
        self.plot.addItem(self.image)
        lay.addWidget(self.glw, 1)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self._key = None
        self.grid: pi.CellGrid | None = None
        self._ticks_for: tuple | None = None

    def apply_snapshot(self, snap) -> None:
        tables = snap.tables
        seqs = sorted(tables)[:MAX_ROWS]
        key = (tuple(seqs), tuple(len(tables[s]) for s in seqs), snap.step)
        if key == self._key:
            return
        self._key = key
        p = snap.pool
        self.refs = p.ref_cnt
        t = table_matrix([tables[s] for s in seqs])
        self.seq_ids, self.table = seqs, t
        valid = t >= 0
        ids = t[valid]
        if len(seqs):
            # only the blocks the tables point at: a cell per table entry, not per block
            shape = tuple(-(-n // RANGE_STEP) * RANGE_STEP for n in t.shape)
            if self.grid is None or (self.grid.rows, self.grid.cols) != shape:
                # the grid (and the view's range) in steps of 8 cells: a table growing by
                # one block neither refits the view (both axes redrawn) nor redraws all rows
                self.grid = pi.CellGrid(*shape, TABLE_CELL)
                self.plot.setRange(xRange=(0, shape[1]), yRange=(0, shape[0]), padding=0)
            cells = np.full(shape, -1, np.int64)
            cells[: t.shape[0], : t.shape[1]] = t
            flat = cells.reshape(-1)
            ok = flat >= 0
            safe = np.where(ok, flat, 0)
            base = np.where(ok, pi.base_index(p.ref_cnt[safe], p.owner[safe], p.fill[safe],
                                              p.evictable[safe]), pi.PAD).astype(np.uint8)
            self.grid.update(base, np.where(ok, p.ref_cnt[safe], 0), np.where(ok, p.fill[safe], 0.0))
            dirty = self.grid.take_dirty()
            g = self.grid
            if dirty is pi.FULL:
                self.image.set_indices(g.image, self.argb, g.cols, g.rows)
            elif dirty.size:
                rr, cc = pi.cell_pixel_index(dirty, g.cols, g.cell)
                self.image.update_pixels(rr, cc, g.image[rr, cc])
            self.image.setVisible(True)
        else:
            self.image.setVisible(False)
        self._set_ticks()
        n_shared = int((p.ref_cnt[ids] > 1).sum())
        self.header.setText(
            f"Block tables: {len(tables)} running sequences"
            + (f" (first {MAX_ROWS} shown)" if len(tables) > MAX_ROWS else "")
            + f" | {int(ids.size)} table entries, {n_shared} point at shared blocks (refcount > 1)")

    def _set_ticks(self) -> None:
        """One label per ~1.6 text lines of the axis as it is now, so they never stack.
        Set only when the rows or the height change: new ticks redraw the axis."""
        room = max(1, int(self.plot.vb.height() / (1.6 * QFontMetrics(self.font()).height())))
        step = max(1, -(-len(self.seq_ids) // room))
        if self._ticks_for == (tuple(self.seq_ids), step):
            return
        self._ticks_for = (tuple(self.seq_ids), step)
        self.plot.getAxis("left").setTicks(
            [[(i + 0.5, f"seq {s}") for i, s in enumerate(self.seq_ids)][::step]])

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
