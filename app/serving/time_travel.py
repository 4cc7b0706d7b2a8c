"""Time travel in the Serving tab: the history of every step (tinyserve_core's History,
fed by the deltas each snapshot carries), the timeline under the pool, the event log
dock and the "what you are seeing" caption.

Live, the tab applies each snapshot as before. Once the timeline leaves live, the views
show the chosen step instead: the pool and block tables as they were (rebuilt from the
history), the selection heatmap cut at that step, the metric plots around it with a
cursor line, and the event log up to it. Snapshots keep arriving and the history keeps
growing meanwhile; End or L returns to live.

The tab's only hooks: it builds one TimeTravel, passes it each snapshot (`ingest`) and
applies snapshots to its views only while `live`."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QKeySequence, QShortcut

from tinyserve_core.observe.describe import LogEntry
from tinyserve_core.observe.history import History, PastStep

from .event_log import EventLogView
from .snapshot import Snapshot, pool_arrays, pool_event_lists, pool_events
from .story import StoryTracker
from .story_caption import StoryCaption
from .timeline import TimelineWidget

LOG_REFRESH_S = 0.25       # the live event log redraws at most this often
CURSOR_LINES_PER_FRAME = 3  # metric plots whose cursor line moves per frame (of nine)
CURSOR_PEN = pg.mkPen((255, 230, 120), width=1.2)
MARK_PEN = pg.mkPen((255, 255, 255), width=2.5)


def past_snapshot(past: PastStep, state: str = "past") -> Snapshot:
    """A Snapshot of a past step, for the views' usual `apply_snapshot`: the pool and
    tables of that step, and its own events as the pool's animations."""
    pool = pool_arrays(past.pool)
    since, ids = past.changed_since or (None, None)
    # the history's tuples as they are: the block tables view makes one matrix of them
    # (an array per table here cost ~0.5 ms of each scrub frame)
    return Snapshot(past.step, past.clock, 0.0, state, pool.ref_cnt.shape[0], past.pool.block_size,
                    pool, pool_events(*pool_event_lists(past.events)), dict(past.tables),
                    np.zeros((0, 0)), np.zeros((0, 3)), [], None, {}, changes=(since, past.serial, ids))


def selection_until(view, step: int):
    """The heatmap's columns (and recall series) up to `step`; None when none is that old."""
    if view is None:
        return None
    keep = view.steps <= step
    if not keep.any():
        return None
    ks = view.series_steps <= step
    return dataclasses.replace(
        view, steps=view.steps[keep], scores=view.scores[:, keep], selected=view.selected[:, keep],
        oracle=view.oracle[:, keep], num_pages=view.num_pages[keep], series_steps=view.series_steps[ks],
        selection_recall=view.selection_recall[ks], mass_recall=view.mass_recall[ks],
        tier_hit_rate=view.tier_hit_rate[ks])


class TimeTravel(QObject):
    def __init__(self, tab):
        super().__init__(tab)
        self.tab = tab
        self.history: History | None = None
        self._generation = None
        self.story = StoryTracker()
        self.past: PastStep | None = None
        self.timeline = TimelineWidget()
        self.caption = StoryCaption()
        self.log = EventLogView()
        layout = tab.centralWidget().layout()
        i = layout.indexOf(tab.pool_view)
        layout.insertWidget(i, self.caption)
        layout.insertWidget(i + 2, self.timeline)
        tab._dock("Event log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.timeline.step_changed.connect(self.show_step)
        self.log.entry_clicked.connect(self.select_entry)
        for key in ("End", "L"):
            sc = QShortcut(QKeySequence(key), tab)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(self.timeline.go_live)
        self.marks = pg.ScatterPlotItem(symbol="s", size=1.0, pxMode=False, pen=MARK_PEN, brush=None)
        self.marks.setZValue(10)
        self.marks.setVisible(False)
        tab.pool_view.plot.addItem(self.marks)
        self.cursor_lines = []
        for p in tab.metrics_view.plots:
            line = pg.InfiniteLine(angle=90, movable=False, pen=CURSOR_PEN)
            line.setVisible(False)
            p.addItem(line, ignoreBounds=True)
            self.cursor_lines.append(line)
        self._log_t = 0.0
        self.selected: LogEntry | None = None
        self._line_clock = 0.0
        self._lines_due: list[int] = []        # cursor lines not yet at the step shown
        self._line_turn = 0
        self._lines_moved = False

    @property
    def live(self) -> bool:
        return self.timeline.live

    # ---- recording ------------------------------------------------------------------
    def _reset(self, snap) -> None:
        self.history = History(snap.num_blocks, snap.block_size)
        self._generation = snap.generation
        self.story = StoryTracker()
        self.caption.reset()
        self.log.set_history(self.history)
        self.timeline.go_live()

    def ingest(self, snap) -> None:
        h = self.history
        if (h is None or snap.generation != self._generation or h.num_blocks != snap.num_blocks
                or (snap.history and len(h) and snap.history[0].step != h.last_step + 1)):
            self._reset(snap)
            h = self.history
        beats = []
        for d in snap.history:
            h.ingest(d)
            beats += self.story.feed(d.step, d.events, 0.0, h.requests)
        if snap.metrics.size and len(h):
            from .snapshot import COL
            beats += self.story.feed(h.last_step, (), float(snap.metrics[:, COL["kv_cache_usage_perc"]].max()))
        self.caption.add(beats)
        if len(h):
            self.timeline.set_range(h.first_step, h.last_step)
        now = time.perf_counter()
        if self.live and now - self._log_t >= LOG_REFRESH_S:
            self._log_t = now
            self.log.refresh()

    # ---- showing a step ---------------------------------------------------------------
    def show_step(self, step: int) -> None:
        tab = self.tab
        if step < 0 or self.history is None or not len(self.history):
            self.past = None
            tab.pool_view.past_step = None
            tab.metrics_view.set_cursor(None)
            self._lines_due = []
            for line in self.cursor_lines:
                line.setVisible(False)
            last = getattr(tab, "last_snapshot", None)
            if last is not None:
                tab.pool_view.apply_snapshot(last)
                tab.tables_view.apply_snapshot(last)
                tab.selection_view.apply_snapshot(last)
            self.log.show_step(-1)
            self._mark(self.selected)
            return
        past = self.past = self.history.state_at(step)
        tab.pool_view.past_step = past.step   # hover tips: the past arrays, not the engine's now
        snap = past_snapshot(past)
        tab.pool_view.apply_snapshot(snap)
        tab.tables_view.apply_snapshot(snap)
        last = getattr(tab, "last_snapshot", None)
        if last is not None:
            view = selection_until(last.selection, step)
            if view is not None:
                tab.selection_view.apply_snapshot(dataclasses.replace(last, selection=view))
        tab.metrics_view.set_cursor(past.clock)
        self.aim_cursor_lines(past.clock)
        self.log.show_step(step)
        self._mark(self.selected)

    def aim_cursor_lines(self, clock: float) -> None:
        self._line_clock = clock
        n = len(self.cursor_lines)     # in turns: a drag moves each line every third frame
        self._lines_due = [(self._line_turn + k) % n for k in range(n)]
        self.move_cursor_lines()
        self._lines_moved = True       # this frame's turn is taken (see frame_cursor_lines)

    def frame_cursor_lines(self) -> None:
        """The tab's frame: the next turn of lines, unless a step shown since the last
        frame already moved this frame's (a drag would otherwise repaint six plots a
        frame, not three)."""
        if self._lines_moved:
            self._lines_moved = False
            return
        self.move_cursor_lines()

    def move_cursor_lines(self, n: int = CURSOR_LINES_PER_FRAME) -> None:
        """Put `n` more metric plots' cursor lines at the step shown: a drag repaints
        a few small plots per frame, in turns like their curves, instead of all nine;
        every line is there within three frames."""
        due, self._lines_due = self._lines_due[:n], self._lines_due[n:]
        if due:
            self._line_turn = (due[-1] + 1) % len(self.cursor_lines)
        for i in due:
            self.cursor_lines[i].setPos(self._line_clock)
            self.cursor_lines[i].setVisible(True)

    def past_block_text(self, bid: int) -> str:
        """The Block details of `bid` at the step shown: what the history holds (the
        engine can only answer for its present)."""
        p = self.past.pool
        return (f"block {bid} at step {self.past.step} (time travel)\n"
                f"refcount {int(p.ref_cnt[bid])}, first owner seq {int(p.owner[bid])}\n"
                f"tokens stored {int(p.num_tokens[bid])} of {p.block_size}\n"
                f"cached (hashed): {bool(p.is_cached[bid])}, evictable: {bool(p.evictable[bid])}")

    # ---- selecting from the log ---------------------------------------------------------
    def _tables(self) -> dict:
        if self.past is not None:
            return self.past.tables
        last = getattr(self.tab, "last_snapshot", None)
        return {} if last is None else last.tables

    def _mark(self, entry: LogEntry | None) -> None:
        anim = self.tab.pool_view.animator
        if entry is None or anim is None:
            if len(self.marks.data):
                self.marks.setData([])
            self.marks.setVisible(False)   # an empty scatter still costs every pool paint
            return
        ids = list(entry.blocks)
        if entry.seq_id is not None:
            ids += [int(b) for b in self._tables().get(entry.seq_id, ())]
        ids = np.unique(np.asarray([b for b in ids if 0 <= b < anim.num_blocks], np.int64))
        r, c = anim.cell_of(ids)
        self.marks.setData(x=np.asarray(c) + 0.5, y=np.asarray(r) + 0.5)
        self.marks.setVisible(True)

    def select_entry(self, entry: LogEntry) -> None:
        """The entry's blocks (and its sequence's blocks) outlined in the pool, the block
        in the details panel, the sequence in the selection view."""
        self.selected = entry
        self._mark(entry)
        tab = self.tab
        if entry.blocks:
            bid = int(entry.blocks[-1])       # for a copy-on-write: the new copy
            tab._on_block_clicked(bid)     # in the past: the block as it was (past_block_text)
        if entry.seq_id is not None:
            sv = tab.selection_view
            i = sv.seq_box.findData(entry.seq_id)
            if i >= 0:
                sv.follow.setChecked(False)
                sv.seq_box.setCurrentIndex(i)
                sv.key_changed.emit(sv.current_key())
