"""Block tables of the running sequences: one row per sequence, one cell per logical
block, coloured like its physical block in the pool view (shared blocks gold), so a
shared prefix reads as a gold run down several rows and a fork as two rows that share
all but their last cells. One ImageItem again; hover names the physical block."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QCursor
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
        self.plot, self.image = add_image_plot(self.glw, "running sequence", "logical block (page) index")
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
        img = np.full(t.shape, pi.PAD, np.uint16)
        valid = t >= 0
        img[valid] = base[t[valid]]
        if len(seqs):
            self.image.setImage(img, levels=(0, self.lut.shape[0]), lut=self.lut, autoLevels=False)
            self.image.setVisible(True)
        else:
            self.image.setVisible(False)
        ax = self.plot.getAxis("left")
        step = max(1, len(seqs) // 24)
        ax.setTicks([[(i + 0.5, f"seq {s}") for i, s in enumerate(seqs)][::step]])
        n_shared = int((p.ref_cnt[t[valid]] > 1).sum()) if valid.any() else 0
        self.header.setText(
            f"Block tables: {len(tables)} running sequences"
            + (f" (first {MAX_ROWS} shown)" if len(tables) > MAX_ROWS else "")
            + f" | {int(valid.sum())} table entries, {n_shared} point at shared blocks (gold)")

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
