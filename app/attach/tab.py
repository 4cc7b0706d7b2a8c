"""The Attach tab: a server's cache block by block (block map), its prefix forest, its
churn and its scraped metrics, with the connection states in a strip at the top.
The worker thread owns the sockets and the model; the GUI takes the newest frame when
the worker says one is ready (one signal per frame, never one per event) and on a
25 ms timer, which also collects the replies to hover questions."""

from __future__ import annotations

import time

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QLabel, QSplitter, QTabWidget, QTextBrowser, QVBoxLayout, QWidget

from ..serving.metrics_view import PLOTS, MetricsView
from ..widgets.legend import flexible
from .block_map_view import BlockMapView
from .churn_view import ChurnView
from .dialog import AttachDialog
from .forest_view import ForestView
from .loop import AttachFrame, Reply
from .spec import AttachSpec
from .status_strip import StatusStrip
from .worker import AttachWorker

FRAME_MS = 25
# the serving metric plots that only our engine can fill (a server does not export them)
ENGINE_ONLY = {"Memory waste", "Copy-on-write", "Shared / cached-free blocks"}


def format_detail(slot: int, d, text: str | None) -> str:
    if d is None:
        return f"block in slot {slot}: gone (removed since)"
    lines = [f"block in slot {slot}: rank {d.rank}, {d.medium}",
             f"hash {d.block_hash!r}", f"parent {d.parent_hash!r}",
             f"depth {d.depth} (blocks from its tree's root)",
             f"re-stored {d.reuse} times while live",
             f"first stored t = {d.first_stored:.3f}, last stored t = {d.last_touched:.3f} (server time)",
             "tokens: " + ("not kept" if d.token_ids is None else " ".join(map(str, d.token_ids)))]
    if text is not None:
        lines += ["", "chain from the root:", text]
    return "\n".join(lines)


def hover_text(slot: int, d, text: str | None) -> str:
    head = (f"slot {slot}: rank {d.rank} {d.medium}, depth {d.depth}, re-stored {d.reuse}x, "
            f"first stored t = {d.first_stored:.1f} s")
    return head if text is None else head + "\n" + text[-300:]


class AttachTab(QWidget):
    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings if settings is not None else QSettings("TinyServe", "tinyserve-gui")
        self.worker: AttachWorker | None = None
        self.last_frame: AttachFrame | None = None
        self.frames = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.status = StatusStrip()
        lay.addWidget(self.status)
        self.block_map = BlockMapView()
        self.forest = ForestView()
        self.details = QTextBrowser()
        self.details.setPlaceholderText("Click a block in the map (or a chain in the forest) to see it here.")
        self.churn = ChurnView()
        self.metrics = MetricsView()
        self._server_plots_only()
        # left: the map over its churn; right: forest / details over the server metrics
        self.side = QTabWidget()
        self.side.addTab(self.forest, "Prefix forest")
        self.side.addTab(self.details, "Block details")
        self.metrics_header = flexible(QLabel("Server metrics"))
        self.metrics_box = mbox = QWidget()
        mlay = QVBoxLayout(mbox)
        mlay.setContentsMargins(0, 0, 0, 0)
        mlay.addWidget(self.metrics_header)
        mlay.addWidget(self.metrics, 1)
        mbox.hide()                          # until a scrape arrives: no empty plots
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.block_map)
        left.addWidget(self.churn)
        left.setSizes([620, 260])
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.side)
        right.addWidget(mbox)
        right.setSizes([380, 500])
        outer = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(left)
        outer.addWidget(right)
        outer.setSizes([600, 400])
        lay.addWidget(outer, 1)
        self.block_map.block_clicked.connect(self._ask_detail)
        self.block_map.shade_changed.connect(self._set_shade)
        self.block_map.block_hovered.connect(lambda s: self._ask(s, "hover"))
        self.forest.chain_hovered.connect(lambda s: self._ask(s, "forest"))
        self.forest.chain_clicked.connect(self._select_chain)
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.timeout.connect(self.frame)

    def _server_plots_only(self) -> None:
        """Hide the engine-only plots and close the gaps they leave (one row)."""
        grid = self.metrics.grid
        shown = [w for w, (title, _, _) in zip(self.metrics.widgets, PLOTS) if title not in ENGINE_ONLY]
        for w, (title, _, _) in zip(self.metrics.widgets, PLOTS):
            w.setVisible(title not in ENGINE_ONLY)
        for i, w in enumerate(shown):
            grid.addWidget(w, i // 2, i % 2)
        for p in self.metrics.plots:
            p.setLabel("bottom", "since attach")   # the ticks say "5 s": no SI-scaled unit

    # ---- session ---------------------------------------------------------------------
    def attach(self, spec: AttachSpec, *, record: str | None = None, replay_timeout_s: float = 2.0) -> None:
        """Start watching `spec` (a running session is stopped first)."""
        self.detach()
        self.metrics.reset()
        self.worker = AttachWorker(spec, record=record, replay_timeout_s=replay_timeout_s)
        self.worker.frame_ready.connect(self.frame)     # queued: runs on the GUI thread
        self.worker.start()
        self.timer.start()
        self.status.setText(f"<b>{spec.describe()}</b> — attaching...")

    def detach(self) -> None:
        if self.worker is not None:
            self.timer.stop()
            self.worker.shutdown()
            self.worker = None

    def open_dialog(self) -> bool:
        dlg = AttachDialog(self.settings, self)
        if dlg.exec() and dlg.spec is not None:
            self.attach(dlg.spec)
            return True
        return False

    def _set_shade(self, shade: str) -> None:
        if self.worker is not None:
            self.worker.loop.set_shade(shade)

    def _ask(self, slot: int, tag) -> None:
        if self.worker is not None and slot >= 0:
            self.worker.loop.ask(slot, tag)

    def _ask_detail(self, slot: int) -> None:
        self.details.setPlainText(f"block in slot {slot}: asking...")
        self.side.setCurrentWidget(self.details)
        self._ask(slot, "detail")

    def _select_chain(self, slot: int) -> None:
        self.block_map.select(slot)

    # ---- the frame ---------------------------------------------------------------------
    def frame(self) -> AttachFrame | None:
        if self.worker is None:
            return None
        f = self.worker.loop.take()
        if f is not None:
            self.apply(f)
        self._replies()
        return f

    def apply(self, f: AttachFrame) -> None:
        self.last_frame = f
        self.frames += 1
        ev = f.events
        self.block_map.apply(f.image, (
            f"{f.blocks_live:,} live blocks in {f.tree_roots:,} prefix trees (deepest {f.max_depth}) | "
            f"events: {ev['BlockStored']:,} stored, {ev['BlockRemoved']:,} removed, "
            f"{ev['AllBlocksCleared']:,} cleared, {ev['other']:,} other"))
        if f.forest is not None:
            self.forest.set_forest(f.forest)
        self.churn.set_churn(f.churn)
        self.metrics.add(f.metric_rows, f.latencies)
        self.metrics.render(plots=2)
        if f.scrapes and self.metrics_box.isHidden():
            self.metrics_box.show()
        if f.scrapes:
            self.metrics_header.setText("Server metrics (Prometheus, vLLM / SGLang names) from "
                                        + ", ".join(s.url for s in f.scrapes))
        self.status.update_from(f, time.time())

    def _replies(self) -> None:
        q = self.worker.loop.replies
        while not q.empty():
            r: Reply = q.get_nowait()
            if r.tag == "forest":
                self.forest.set_text(r.slot, r.text or "(tokens not kept for this chain)")
            elif r.tag == "hover":
                if r.slot == self.block_map.hovered and r.detail is not None:
                    self.block_map.show_tip(hover_text(r.slot, r.detail, r.text))
            else:
                self.details.setPlainText(format_detail(r.slot, r.detail, r.text))

    def render_all(self) -> None:
        """Bring every view up to date now (headless screenshots)."""
        self.frame()
        self.metrics.render()

    def views(self) -> dict[str, QWidget]:
        return {"Block map": self.block_map, "Prefix forest": self.forest, "Churn": self.churn,
                "Server metrics": self.metrics}

    def shutdown(self) -> None:
        self.detach()


def make_tab(window) -> AttachTab:
    """The main window's optional-tab hook (OPTIONAL_TABS)."""
    return AttachTab(getattr(window, "settings", None))


def attach_tab(window) -> AttachTab | None:
    for i in range(window.tabs.count()):
        w = window.tabs.widget(i)
        if isinstance(w, AttachTab):
            return w
    return None


def open_attach(window) -> None:
    """File > Attach... and the serving controls' button: the dialog, then the tab."""
    tab = attach_tab(window)
    if tab is None:
        tab = make_tab(window)
        window.add_tab(tab, "Attach")
    window.tabs.setCurrentWidget(tab)
    tab.open_dialog()
