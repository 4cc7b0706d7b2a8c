"""Cache selection view: for one (sequence, layer, kv-head), a heatmap of pages x
decode steps coloured by the page's bound score, selected pages outlined, oracle
pages marked (green dot = the policy kept it, vermilion dot = a miss); per-layer recall
and fast-tier hit rate over time below. The heatmap is one RGBA image made in numpy:
each cell is a few pixels wide so marks and dots are pixels, not graphics items.
Selected pages keep their full colour and get a white corner mark; the others are
dimmed: full outlines turned a mostly-selected map (the streaming policy) into a grid."""

from __future__ import annotations

import warnings

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSpinBox, QToolTip,
                               QVBoxLayout, QWidget)

from ..widgets.image_plot import BACKGROUND, add_image_plot, dark_canvas, no_si_scale
from ..widgets import palette as pal
from ..widgets.legend import ColourLegend, flexible
from .selection_data import SelectionView
from .selection_stages import LEGEND as CANDIDATE_LEGEND, mark_candidates

OUTLINE = np.array([*pal.SELECTED_OUTLINE_RGB, 255], np.uint8)
HIT = np.array([*pal.ORACLE_KEPT_RGB, 255], np.uint8)
MISS = np.array([*pal.ORACLE_MISSED_RGB, 255], np.uint8)
NO_SCORE = np.array([*pal.NO_SCORE_RGB, 255], np.uint8)
PAST_CTX = np.array([*BACKGROUND, 255], np.uint8)  # past the context: the canvas shows through
CMAP = pg.colormap.get("viridis")
_CMAP = CMAP.getLookupTable(nPts=256, alpha=True).astype(np.uint8)
LAYER_COLOURS = pal.SERIES_RGB
NORMALISATION = ("colour = the page's bound score scaled within its decode step (column): "
                 "0 = that step's lowest page, 1 = its highest; the raw score is in the tooltip")


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
    dim = in_ctx & ~v.selected
    cells[dim, :3] = (cells[dim, :3] * pal.UNSELECTED_DIM).astype(np.uint8)
    cells[~in_ctx] = PAST_CTX
    # a (page, row-in-cell, step, col-in-cell) view of the image, one uint32 per RGBA
    # pixel: every cell is a block, and outlines/dots touch only the cells they mark
    u32 = lambda c: np.ascontiguousarray(c, np.uint8).view(np.uint32)
    img5 = np.empty((P, cell, S, cell), np.uint32)
    img5[...] = u32(cells).reshape(P, S)[:, None, :, None]
    p, s = np.nonzero(v.selected)
    if p.size and cell >= 4:   # a corner mark: at most a quarter of the cell, never a grid
        o = u32(OUTLINE)[0]
        k = max(1, cell // 4)
        img5[p, :k, s, : 2 * k] = o
        img5[p, k: 2 * k, s, :k] = o
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
        self.heat, self.image = add_image_plot(self.glw, "page", "decode step (oldest left)",
                                               row=0, col=0, title="page scores")
        self.colour_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=CMAP, interactive=False,
                                          width=12, label="score in step")
        self.glw.addItem(self.colour_bar, row=0, col=1)
        self.norm_note = QLabel(NORMALISATION)
        self.norm_note.setStyleSheet(f"color: {pal.HINT_CSS};")
        flexible(self.norm_note)
        # recall plots in their own view: they repaint on their own turn, not with the heatmap
        self.glw2 = dark_canvas()
        self.recall = self.glw2.addPlot(row=0, col=0)
        self._set_recall_title([])
        self.recall.setLabel("bottom", "engine step")
        self.recall.setYRange(0, 1.05)
        no_si_scale(self.recall)
        self.recall.showGrid(x=True, y=True, alpha=0.25)
        self.tier = self.glw2.addPlot(row=0, col=1)
        self.tier.setTitle("fast-tier hit rate", size="9pt")
        self._tier_shown = True
        self.show_tier(False)
        self.tier.setLabel("bottom", "engine step")
        self.tier.setYRange(0, 1.05)
        no_si_scale(self.tier)
        self.tier.showGrid(x=True, y=True, alpha=0.25)
        self.tier_curve = self.tier.plot([], [], pen=pg.mkPen((110, 255, 255), width=1.6))
        self.recall_curves: dict[tuple[int, str], pg.PlotDataItem] = {}
        lay.addWidget(self.glw, 3)
        lay.addWidget(self.norm_note)
        lay.addWidget(ColourLegend([
            (tuple(OUTLINE[:3]), "white corner, full colour = selected (others dimmed)"),
            (tuple(HIT[:3]), "oracle page kept"), (tuple(MISS[:3]), "oracle page missed"),
            (tuple(NO_SCORE[:3]), "no score (stats off)"),
            CANDIDATE_LEGEND,
        ]))
        lay.addWidget(self.glw2, 2)
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
                for box, vals, val in ((self.layer_box, v.layers, layer), (self.head_box, v.heads, head)):
                    # only on a change: QSpinBox.setRange asks the window's layout again
                    # every time (updateGeometry), which repainted every dock per snapshot
                    if (box.minimum(), box.maximum()) != (min(vals), max(vals)):
                        box.setRange(min(vals), max(vals))
                    if box.value() != val:       # (setValue repaints the box even when equal)
                        box.setValue(val)
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

    def _set_recall_title(self, layers) -> None:
        names = " ".join(f"<span style='color:{pal.rgb_css(LAYER_COLOURS[i % len(LAYER_COLOURS)])}'>"
                         f"&#9632;&nbsp;layer {l}</span>" for i, l in enumerate(layers))
        self.recall.setTitle("recall: solid = selection, dashed = attention mass"
                             + (f"<br>{names}" if names else ""), size="9pt")

    def render_series(self):
        v = self.view
        if list(v.series_layers) != getattr(self, "_title_layers", None):
            self._title_layers = list(v.series_layers)
            self._set_recall_title(self._title_layers)
        for i, l in enumerate(v.series_layers):
            rgb = LAYER_COLOURS[i % len(LAYER_COLOURS)]
            for j, (arr, style) in enumerate(((v.selection_recall, None), (v.mass_recall, Qt.PenStyle.DashLine))):
                c = self.recall_curves.get((l, j))
                if c is None:
                    pen = pg.mkPen(rgb, width=1.5, style=style) if style else pg.mkPen(rgb, width=1.5)
                    c = self.recall.plot([], [], pen=pen)
                    self.recall_curves[(l, j)] = c
                y = arr[:, i]
                keep = ~np.isnan(y)
                c.setData(v.series_steps[keep], y[keep])
        keep = ~np.isnan(v.tier_hit_rate)
        self.tier_curve.setData(v.series_steps[keep], v.tier_hit_rate[keep])
        self.show_tier(bool(keep.any()))

    def show_tier(self, on: bool) -> None:
        """Without a fast tier the plot would be empty: its room goes to the recall plot."""
        if on == self._tier_shown:
            return
        self._tier_shown = on
        if on:
            self.glw2.addItem(self.tier, row=0, col=1)
        else:
            self.glw2.removeItem(self.tier)

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
