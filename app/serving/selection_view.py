"""Cache selection view: for one (sequence, layer, kv-head), a heatmap of pages x
decode steps coloured by the page's bound score, selected pages outlined, oracle
pages marked (green dot = the policy kept it, red dot = a miss); per-layer recall and
fast-tier hit rate over time below. The heatmap is one RGBA image made in numpy:
each cell is `CELL` pixels wide so outlines and dots are pixels, not graphics items."""

from __future__ import annotations

import warnings

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSpinBox, QToolTip,
                               QVBoxLayout, QWidget)

from ..widgets.image_plot import BACKGROUND, add_image_plot, dark_canvas
from ..widgets.legend import ColourLegend, flexible
from .selection_data import SelectionView
from .selection_stages import LEGEND as CANDIDATE_LEGEND, mark_candidates

CELL = 6
OUTLINE = np.array([255, 255, 255, 255], np.uint8)
HIT = np.array([60, 230, 90, 255], np.uint8)
MISS = np.array([255, 50, 50, 255], np.uint8)
NO_SCORE = np.array([70, 72, 84, 255], np.uint8)
PAST_CTX = np.array([*BACKGROUND, 255], np.uint8)  # past the context: the canvas shows through
_CMAP = pg.colormap.get("viridis").getLookupTable(nPts=256, alpha=True).astype(np.uint8)
LAYER_COLOURS = [(90, 200, 255), (255, 170, 60), (120, 230, 120), (230, 110, 200),
                 (250, 230, 90), (160, 140, 255), (255, 110, 110), (120, 240, 230)]


def cell_pixels(P: int, S: int) -> int:
    """Pixels per cell: big enough for an outline and a dot, small enough to stay ~1 MP."""
    return int(np.clip(np.sqrt(300_000 / max(1, P * S)), 3, 8))


def heatmap_rgba(v: SelectionView, cell: int | None = None) -> np.ndarray:
    """uint8 [P*cell, S*cell, 4], page 0 at the top, oldest step on the left."""
    P, S = v.scores.shape
    cell = cell or cell_pixels(P, S)
    sc = v.scores.astype(np.float32)
    finite = np.isfinite(sc)
    masked = np.where(finite, sc, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(masked, axis=0, keepdims=True)
        hi = np.nanmax(masked, axis=0, keepdims=True)
    norm = (sc - lo) / np.where(hi > lo, hi - lo, 1.0)
    norm = np.where(finite, np.clip(norm, 0, 1), 0)
    cells = _CMAP[(norm * 255).astype(np.int64)]
    in_ctx = np.arange(P)[:, None] < v.num_pages[None, :]
    cells[in_ctx & ~finite] = NO_SCORE
    cells[~in_ctx] = PAST_CTX
    # a (page, row-in-cell, step, col-in-cell) view of the image, one uint32 per RGBA
    # pixel: every cell is a block, and outlines/dots touch only the cells they mark
    u32 = lambda c: np.ascontiguousarray(c, np.uint8).view(np.uint32)
    img5 = np.empty((P, cell, S, cell), np.uint32)
    img5[...] = u32(cells).reshape(P, S)[:, None, :, None]
    p, s = np.nonzero(v.selected)
    if p.size:
        o = u32(OUTLINE)[0]
        img5[p, 0, s] = o
        img5[p, cell - 1, s] = o
        img5[p, :, s, 0] = o
        img5[p, :, s, cell - 1] = o
    mark_candidates(img5, v.candidates, v.selected, cell)
    if v.has_oracle:
        m = cell // 2
        span = (m,) if cell < 5 else (m - 1, m)   # a 1- or 2-pixel dot inside the outline
        for mask, colour in ((v.oracle & v.selected, HIT), (v.oracle & ~v.selected, MISS)):
            p, s = np.nonzero(mask)
            if p.size:
                c = u32(colour)[0]
                for dy in span:
                    for dx in span:
                        img5[p, dy, s, dx] = c
    return img5.reshape(P * cell, S * cell).view(np.uint8).reshape(P * cell, S * cell, 4)


class SelectionViewWidget(QWidget):
    key_changed = Signal(object)    # (seq, layer, head) or None = follow the newest

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view: SelectionView | None = None
        self.frames = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        self.follow = QCheckBox("follow newest")
        self.follow.setChecked(True)
        self.seq_box = QComboBox()
        self.seq_box.setMinimumWidth(90)
        self.layer_box = QSpinBox()
        self.head_box = QSpinBox()
        for lab, w in (("sequence", self.seq_box), ("layer", self.layer_box), ("kv-head", self.head_box)):
            row.addWidget(QLabel(lab))
            row.addWidget(w)
        row.addWidget(self.follow)
        row.addStretch(1)
        lay.addLayout(row)
        self.info = QLabel("Cache selection: no page selections yet. They appear at decode steps "
                           "when selection statistics are on (Controls).")
        flexible(self.info)
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.glw = dark_canvas()
        self.heat, self.image = add_image_plot(self.glw, "page (logical block)", "decode step (column, oldest left)",
                                               row=0, col=0, colspan=2, title="page scores (per-step normalised)")
        # recall plots in their own view: they repaint on their own turn, not with the heatmap
        self.glw2 = dark_canvas()
        self.recall = self.glw2.addPlot(row=0, col=0, title="selection recall (solid), attention-mass recall (dashed)")
        self.recall.setLabel("bottom", "engine step")
        self.recall.setLabel("left", "recall")
        self.recall.setYRange(0, 1.05)
        self.recall.showGrid(x=True, y=True, alpha=0.25)
        self.recall.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.tier = self.glw2.addPlot(row=0, col=1, title="fast-tier hit rate")
        self.tier.setLabel("bottom", "engine step")
        self.tier.setLabel("left", "hit rate")
        self.tier.setYRange(0, 1.05)
        self.tier.showGrid(x=True, y=True, alpha=0.25)
        self.tier_curve = self.tier.plot([], [], pen=pg.mkPen((110, 255, 255), width=1.6))
        self.recall_curves: dict[tuple[int, str], pg.PlotDataItem] = {}
        lay.addWidget(self.glw, 3)
        lay.addWidget(self.glw2, 2)
        lay.addWidget(ColourLegend([
            (tuple(_CMAP[20][:3]), "low score"), (tuple(_CMAP[235][:3]), "high score"),
            (tuple(OUTLINE[:3]), "outline = selected"), (tuple(HIT[:3]), "oracle page kept"),
            (tuple(MISS[:3]), "oracle page missed"), (tuple(NO_SCORE[:3]), "no score (stats off)"),
            CANDIDATE_LEGEND,
        ]))
        self.seq_box.activated.connect(self._user_changed)
        self.layer_box.valueChanged.connect(self._user_changed)
        self.head_box.valueChanged.connect(self._user_changed)
        self.follow.toggled.connect(self._user_changed)
        self.glw.scene().sigMouseMoved.connect(self._on_move)
        self._updating = False

    def _user_changed(self, *_):
        if self._updating:
            return
        if self.follow.isChecked() and self.sender() is not self.follow:
            self.follow.setChecked(False)   # a manual choice stops following (emits below)
            return
        self.key_changed.emit(self.current_key())

    def current_key(self):
        if self.follow.isChecked() or self.seq_box.currentData() is None:
            return None
        return (int(self.seq_box.currentData()), self.layer_box.value(), self.head_box.value())

    def apply_snapshot(self, snap) -> None:
        v = snap.selection
        self._updating = True
        try:
            current = self.seq_box.currentData()
            seqs = list(snap.selection_keys.items())
            if [self.seq_box.itemData(i) for i in range(self.seq_box.count())] != [s for s, _ in seqs]:
                self.seq_box.clear()
                for s, label in seqs:
                    self.seq_box.addItem(label, s)
            if v is not None:
                seq, layer, head = v.key
                i = self.seq_box.findData(seq if self.follow.isChecked() or current is None else current)
                if i >= 0:
                    self.seq_box.setCurrentIndex(i)
                self.layer_box.setRange(min(v.layers), max(v.layers))
                self.head_box.setRange(min(v.heads), max(v.heads))
                self.layer_box.setValue(layer)
                self.head_box.setValue(head)
        finally:
            self._updating = False
        if v is not None and v is not self.view:
            self.view = v
            self._stale = True

    def render_if_new(self) -> bool:
        """Heatmap on one call, recall plots on the next: never both in one frame."""
        if self.view is None:
            return False
        if getattr(self, "_stale", False):
            self._stale = False
            self._series_stale = True
            self.render_heatmap()
            return True
        if getattr(self, "_series_stale", False):
            self._series_stale = False
            self.render_series()
            return True
        return False

    def render(self):
        self.render_heatmap()
        self.render_series()

    def render_heatmap(self):
        v = self.view
        img = heatmap_rgba(v)
        P, S = v.scores.shape
        self.image.setImage(img, autoLevels=False)
        self.image.setRect(QRectF(0, 0, S, P))
        seq, layer, head = v.key
        n_sel = v.selected[:, -1].sum() if S else 0
        self.info.setText(
            f"policy {v.policy} | seq {seq}, layer {layer}, kv-head {head} | {S} decode steps shown | "
            f"last step: {int(n_sel)} of {int(v.num_pages[-1]) if S else 0} pages selected"
            + ("" if v.has_oracle else " | oracle/recall need statistics on"))
        self.frames += 1

    def render_series(self):
        v = self.view
        for i, l in enumerate(v.series_layers):
            rgb = LAYER_COLOURS[i % len(LAYER_COLOURS)]
            for j, (arr, style) in enumerate(((v.selection_recall, None), (v.mass_recall, Qt.PenStyle.DashLine))):
                c = self.recall_curves.get((l, j))
                if c is None:
                    pen = pg.mkPen(rgb, width=1.5, style=style) if style else pg.mkPen(rgb, width=1.5)
                    c = self.recall.plot([], [], pen=pen, name=f"layer {l}" if j == 0 else None)
                    self.recall_curves[(l, j)] = c
                y = arr[:, i]
                keep = ~np.isnan(y)
                c.setData(v.series_steps[keep], y[keep])
        keep = ~np.isnan(v.tier_hit_rate)
        self.tier_curve.setData(v.series_steps[keep], v.tier_hit_rate[keep])

    def _on_move(self, pos):
        v = self.view
        if v is None or not self.heat.sceneBoundingRect().contains(pos):
            return
        pt = self.heat.vb.mapSceneToView(pos)
        p, s = int(np.floor(pt.y())), int(np.floor(pt.x()))
        P, S = v.scores.shape
        if 0 <= p < P and 0 <= s < S:
            sc = v.scores[p, s]
            QToolTip.showText(QCursor.pos(),
                              f"page {p}, engine step {int(v.steps[s])}\nscore {sc:.4g}\n"
                              f"selected {bool(v.selected[p, s])}"
                              + (f", oracle {bool(v.oracle[p, s])}" if v.has_oracle else ""), self.glw)
