"""Block tables of the running sequences: one row per sequence, one cell per logical
block, drawn exactly like its physical block in the pool view (owner fill by height,
refcount strip), so a shared prefix reads as a run of bright strips down several rows
and a fork as two rows that share all but their last cells. One ImageItem again;
hover names the physical block."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QCursor, QFontMetrics
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from ..widgets.image_plot import add_image_plot, dark_canvas
from ..widgets.legend import flexible
from . import pool_image as pi

MAX_ROWS = 128


class BlockTablesView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.lut = pi.build_palette()
        self.seq_ids: list[int] = []
        self.table = np.zeros((0, 0), np.int64)
        self.refs = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.header = QLabel("Block tables: no running sequences")
        flexible(self.header)
        lay.addWidget(self.header)
        self.glw = dark_canvas()
        self.plot, self.image = add_image_plot(self.glw, "", "logical block (page) index")
        lay.addWidget(self.glw, 1)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self._key = None

    def apply_snapshot(self, snap) -> None:
        tables = snap.tables
        seqs = sorted(tables)[:MAX_ROWS]
        width = max((len(tables[s]) for s in seqs), default=0)
        key = (tuple(seqs), tuple(len(tables[s]) for s in seqs), snap.step)
        if key == self._key:
            return
        self._key = key
        p = snap.pool
        self.refs = p.ref_cnt
        t = np.full((len(seqs), max(width, 1)), -1, np.int64)
        for i, s in enumerate(seqs):
            row = tables[s]
            t[i, : len(row)] = row
        self.seq_ids, self.table = seqs, t
        base = pi.base_index(p.ref_cnt, p.owner, p.fill, p.evictable)
        valid = t >= 0
        flat, ok = t.reshape(-1), valid.reshape(-1)
        safe = np.where(ok, flat, 0)
        img = pi.cell_image(np.where(ok, base[safe], pi.PAD).astype(np.uint8),
                            np.where(ok, p.ref_cnt[safe], 0), np.where(ok, p.fill[safe], 0.0),
                            t.shape[0], t.shape[1], 4)
        if len(seqs):
            self.image.setImage(img, levels=(0, self.lut.shape[0]), lut=self.lut, autoLevels=False)
            self.image.setRect(QRectF(0, 0, t.shape[1], t.shape[0]))
            self.image.setVisible(True)
        else:
            self.image.setVisible(False)
        self._set_ticks()
        n_shared = int((p.ref_cnt[t[valid]] > 1).sum()) if valid.any() else 0
        self.header.setText(
            f"Block tables: {len(tables)} running sequences"
            + (f" (first {MAX_ROWS} shown)" if len(tables) > MAX_ROWS else "")
            + f" | {int(valid.sum())} table entries, {n_shared} point at shared blocks (refcount > 1)")

    def _set_ticks(self) -> None:
        """One label per ~1.6 text lines of the axis as it is now, so they never stack."""
        room = max(1, int(self.plot.vb.height() / (1.6 * QFontMetrics(self.font()).height())))
        step = max(1, -(-len(self.seq_ids) // room))
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
