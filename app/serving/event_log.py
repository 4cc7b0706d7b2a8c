"""The event log dock: the engine's recent events in words, newest first, filterable by
kind and by request (or sequence), synchronised with time travel (it lists the events
up to the step shown and marks that step's own), and clicking an entry selects its
block or request in the other views (`entry_clicked`)."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QVBoxLayout, QWidget)

from tinyserve_core.observe.describe import LOG_KINDS, LogEntry, describe
from tinyserve_core.observe.history import History

MAX_ROWS = 400          # rows shown
SCRUB_MS = 120          # while the timeline moves, the list catches up once it rests this long
KIND_LABELS = {"arrive": "arrivals", "prefix_hit": "prefix hits", "alloc": "allocations",
               "fork": "forks", "cow_copy": "copy-on-write", "evict": "evictions",
               "preempt": "preemptions", "free": "frees", "finish": "finishes",
               "reject": "rejections"}
CURRENT = QColor(255, 236, 150)  # rows of the step being shown (dark text stays readable)
# the default filter: what the blocks did (arrivals and finishes flood a busy log)
MEMORY_KINDS = frozenset({"prefix_hit", "alloc", "fork", "cow_copy", "evict", "preempt", "free"})


def entry_matches(e: LogEntry, kind: str | frozenset | None, who: str) -> bool:
    """`kind`: one kind, a set of kinds or None (all). `who` matches a request id or a
    sequence number ("req-3", "3", "seq 3")."""
    if kind is not None and (e.kind not in kind if isinstance(kind, frozenset) else e.kind != kind):
        return False
    if not who:
        return True
    w = who.strip().lower().removeprefix("seq").strip()
    return (e.request_id is not None and w in e.request_id.lower()) or \
        (e.seq_id is not None and w == str(e.seq_id))


def recent_entries(hist: History, upto: int, kind: str | frozenset | None = None, who: str = "",
                   limit: int = MAX_ROWS) -> list[LogEntry]:
    """Up to `limit` matching entries at or before step `upto`, newest first."""
    out: list[LogEntry] = []
    step = min(upto, hist.last_step)
    while step >= hist.first_step and len(out) < limit:
        evs = hist.events(step, step)
        if evs:
            es = describe(step, [e for _, e in evs], hist.requests)
            out.extend(e for e in reversed(es) if entry_matches(e, kind, who))
        step -= 1
    return out[:limit]


class EventLogView(QWidget):
    entry_clicked = Signal(object)        # LogEntry

    def __init__(self, parent=None):
        super().__init__(parent)
        self.history: History | None = None
        self.cursor = -1                  # step shown; -1 = live (the newest)
        self.entries: list[LogEntry] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        self.kind_box = QComboBox()
        self.kind_box.addItem("memory events", MEMORY_KINDS)
        self.kind_box.addItem("all kinds", None)
        for k in LOG_KINDS:
            self.kind_box.addItem(KIND_LABELS[k], k)
        # wide enough for its longest entry plus the arrow (the layout self-check's margin)
        fm = self.kind_box.fontMetrics()
        self.kind_box.setMinimumWidth(max(fm.horizontalAdvance(self.kind_box.itemText(i))
                                          for i in range(self.kind_box.count())) + 32)
        self.who = QLineEdit()
        self.who.setPlaceholderText("request or seq, e.g. req-12 or 7")
        self.who.setClearButtonEnabled(True)
        row.addWidget(QLabel("show"))
        row.addWidget(self.kind_box)
        row.addWidget(QLabel("of"))
        row.addWidget(self.who, 1)
        lay.addLayout(row)
        self.header = QLabel("Event log: no steps yet")
        self.header.setWordWrap(True)
        lay.addWidget(self.header)
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        self.list.setToolTip("click an entry to select its block or request in the other views")
        lay.addWidget(self.list, 1)
        self.kind_box.currentIndexChanged.connect(lambda *_: self.refresh())
        self.who.textChanged.connect(lambda *_: self.refresh())
        self.list.itemClicked.connect(self._clicked)
        self._key = None
        # rebuilding hundreds of rows costs more than a scrub frame: coalesce the steps
        self._later = QTimer(self)
        self._later.setSingleShot(True)
        self._later.setInterval(SCRUB_MS)
        self._later.timeout.connect(self.refresh)

    def set_history(self, hist: History | None) -> None:
        self.history = hist
        self._key = None
        self.refresh()

    def show_step(self, step: int) -> None:
        """Follow the timeline; the list is rebuilt when it rests (SCRUB_MS)."""
        self.cursor = step
        self._later.start()

    def refresh(self) -> None:
        h = self.history
        if h is None or not len(h):
            self.list.clear()
            self.entries = []
            self.header.setText("Event log: no steps yet")
            return
        upto = h.last_step if self.cursor < 0 else self.cursor
        kind, who = self.kind_box.currentData(), self.who.text()
        key = (id(h), upto, h.first_step, kind, who)
        if key == self._key:
            return
        self._key = key
        self.entries = recent_entries(h, upto, kind, who)
        self.list.setUpdatesEnabled(False)
        self.list.clear()
        for e in self.entries:
            it = QListWidgetItem(f"{e.step:>6}  {e.text}")
            if self.cursor >= 0 and e.step == self.cursor:
                it.setBackground(QBrush(CURRENT))
            self.list.addItem(it)
        self.list.setUpdatesEnabled(True)
        where = "live" if self.cursor < 0 else f"at step {self.cursor}"
        self.header.setText(f"Event log ({where}): {len(self.entries)} newest "
                            f"{KIND_LABELS.get(kind, 'events') if isinstance(kind, str) else 'events'} up to step {upto}"
                            + (f" of '{who}'" if who else "") + "; click one to select it")

    def _clicked(self, item: QListWidgetItem) -> None:
        row = self.list.row(item)
        if 0 <= row < len(self.entries):
            self.entry_clicked.emit(self.entries[row])
