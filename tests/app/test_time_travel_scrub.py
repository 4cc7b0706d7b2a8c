"""What a timeline drag costs stays bounded: the drag's moves are shown once per
event-loop pass (newest wins), the block tables redraw only changed cells yet match a
fresh view, and the metric plots keep their window while the cursor moves inside it."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from event_counts import layout_requests, paints

pytestmark = pytest.mark.gui


def test_a_drag_shows_only_its_newest_position(qapp):
    from app.serving.timeline import TimelineWidget
    tl = TimelineWidget()
    tl.set_range(0, 100)
    shown = []
    tl.step_changed.connect(shown.append)
    tl.slider.setSliderDown(True)
    for v in (10, 20, 30):
        tl.slider.setValue(v)
    assert shown == []                 # queued moves: nothing shown yet
    qapp.processEvents()
    assert shown == [30] and tl.cursor == 30
    tl.slider.setSliderDown(False)
    tl.slider.setValue(40)             # a click or a key: shown at once
    assert shown == [30, 40]


def test_block_tables_redraw_matches_a_fresh_view_at_every_step(qapp):
    from app.bench.time_travel_gui import long_history, record_run
    from app.serving.tables_view import BlockTablesView
    from app.serving.time_travel import past_snapshot
    hist = long_history(record_run(512, 80), 512, 80)
    scrubbed = BlockTablesView()
    for step in [40, 41, 45, 44, 30, 60, 59, 80, 2]:
        snap = past_snapshot(hist.state_at(step))
        scrubbed.apply_snapshot(snap)
        fresh = BlockTablesView()
        fresh.apply_snapshot(snap)
        assert scrubbed.seq_ids == fresh.seq_ids == sorted(snap.tables)
        np.testing.assert_array_equal(scrubbed.image.pixels(), fresh.image.pixels())
        for i, s in enumerate(scrubbed.seq_ids):
            row = scrubbed.table[i]
            assert list(row[row >= 0]) == list(snap.tables[s])


def _metrics(rows: int, seconds: float):
    """A 30 s metrics view of `rows` zero rows over `seconds` of engine clock, drawn."""
    from app.serving.metrics_view import MetricsView
    from app.serving.snapshot import COL, METRIC_COLUMNS
    mv = MetricsView(window_s=30.0)
    data = np.zeros((rows, len(METRIC_COLUMNS)))
    data[:, COL["clock"]] = np.linspace(0.0, seconds, rows)
    mv.add(data, np.zeros((0, 3)))
    mv.render()
    return mv


def test_metric_plots_keep_their_window_while_the_cursor_is_inside(qapp):
    mv = _metrics(100, 60.0)
    x0, x1 = mv.plots[0].vb.viewRange()[0]
    mv.set_cursor(45.0)                # inside 30..60: only the cursor lines move
    assert not mv.render()
    mv.set_cursor(10.0)                # outside: the window ends at the cursor
    assert mv.render()
    right = mv.plots[0].vb.viewRange()[0][1]
    assert 10.0 <= right < x1 - 20


def test_metric_cursor_lines_move_in_turns_and_all_arrive():
    from types import SimpleNamespace
    from app.serving.time_travel import TimeTravel
    lines = [SimpleNamespace(pos=None, shown=False) for _ in range(9)]
    for ln in lines:
        ln.setPos = lambda v, ln=ln: setattr(ln, "pos", v)
        ln.setVisible = lambda v, ln=ln: setattr(ln, "shown", v)
    tt = SimpleNamespace(cursor_lines=lines, _line_turn=0, _lines_due=[], _line_clock=0.0)
    tt.move_cursor_lines = lambda n=3: TimeTravel.move_cursor_lines(tt, n)
    moved = []
    for clock in (1.0, 2.0, 3.0):          # a drag: one new step per frame
        TimeTravel.aim_cursor_lines(tt, clock)
        moved.append([i for i, ln in enumerate(lines) if ln.pos == clock])
    assert moved == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]   # every plot's line moves during a drag
    TimeTravel.move_cursor_lines(tt)
    TimeTravel.move_cursor_lines(tt)
    assert all(ln.pos == 3.0 and ln.shown for ln in lines)   # at rest: all at the step shown


def test_a_frame_after_a_shown_step_moves_no_more_cursor_lines():
    """A drag shows a step (three lines move) and the tab's frame follows: that frame's
    turn is taken, so a drag repaints three metric plots a frame, not six; at rest the
    frames bring the other lines."""
    from types import SimpleNamespace
    from app.serving.time_travel import TimeTravel
    lines = [SimpleNamespace(pos=None) for _ in range(9)]
    for ln in lines:
        ln.setPos = lambda v, ln=ln: setattr(ln, "pos", v)
        ln.setVisible = lambda v: None
    tt = SimpleNamespace(cursor_lines=lines, _line_turn=0, _lines_due=[], _line_clock=0.0, _lines_moved=False)
    tt.move_cursor_lines = lambda n=3: TimeTravel.move_cursor_lines(tt, n)
    at = lambda c: sum(ln.pos == c for ln in lines)
    for clock in (1.0, 2.0):                      # a drag: step shown, then the frame
        TimeTravel.aim_cursor_lines(tt, clock)
        TimeTravel.frame_cursor_lines(tt)
        assert at(clock) == 3
    TimeTravel.frame_cursor_lines(tt)             # at rest
    assert at(2.0) == 6
    TimeTravel.frame_cursor_lines(tt)
    assert at(2.0) == 9


def test_metric_window_lies_ahead_of_the_cursor_and_same_ticks_are_not_set_again(qapp):
    mv = _metrics(200, 200.0)
    mv.set_cursor(100.0)               # left the window going back: most of the new one behind
    mv.render()
    assert mv.plots[0].vb.viewRange()[0][1] == pytest.approx(103.0, abs=0.5)
    mv.set_cursor(104.0)               # then forward past it: most of the new one ahead
    mv.render()
    x0, x1 = mv.plots[0].vb.viewRange()[0]
    assert x0 == pytest.approx(101.0, abs=0.5) and x1 == pytest.approx(131.0, abs=0.5)
    for c in np.arange(104.0, 131.0, 3.0):   # a drag inside it: the plots stay
        mv.set_cursor(float(c))
        assert not mv.render()
    # a redraw with the same y range leaves the y axes alone (new ticks redraw an axis)
    calls = []
    for p in mv.plots:
        ax = p.getAxis("left")
        ax.setTicks = lambda *a, ax=ax: calls.append(ax)
    mv.set_cursor(10.0)
    assert mv.render() and mv.plots[0].vb.viewRange()[0][1] < 21   # (a round 20 s axis: a short run)
    assert calls == []


def test_selection_view_does_not_lay_the_window_out_again_for_the_same_choices(qapp):
    """QSpinBox.setRange asks the layout again every time: applying snapshots with the
    same layers and heads must not, or every dock of the window repaints per frame."""
    from types import SimpleNamespace
    from app.serving.selection_data import SelectionView
    from app.serving.selection_view import SelectionViewWidget
    S = 5
    v = SelectionView((1, 0, 0), "quest", np.arange(S), np.random.rand(4, S).astype(np.float32),
                      np.ones((4, S), bool), np.zeros((4, S), bool), False, np.full(S, 4), [0, 1], [0, 1],
                      np.arange(0), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), [0, 1])
    w = SelectionViewWidget()
    w.show()
    w.apply_snapshot(SimpleNamespace(selection=v, selection_keys={1: "req-1"}))
    qapp.processEvents()
    asked = layout_requests(w)
    for _ in range(3):
        w.apply_snapshot(SimpleNamespace(selection=v, selection_keys={1: "req-1"}))
        qapp.processEvents()
    assert asked.n == 0
    assert (w.layer_box.maximum(), w.head_box.maximum()) == (1, 1)
    w.apply_snapshot(SimpleNamespace(selection=dataclasses.replace(v, layers=[0, 1, 2]), selection_keys={1: "req-1"}))
    assert w.layer_box.maximum() == 2                 # a real change still applies


def test_block_tables_rows_move_and_labels_name_the_rows_shown(qapp):
    from app.bench.time_travel_gui import long_history, record_run
    from app.serving.tables_view import BlockTablesView, grid_columns
    from app.serving.time_travel import past_snapshot
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QImage, QPainter
    hist = long_history(record_run(4096, 120), 4096, 120)
    v = BlockTablesView()
    v.resize(700, 900)
    v.show()
    qapp.processEvents()
    moved = []
    for step in range(40, 121, 10):
        snap = past_snapshot(hist.state_at(step))
        before = list(v.seq_ids)
        shape = None if v.grid is None else (v.grid.rows, v.grid.cols)
        if v.grid is not None:
            grid_move = v.grid.move_rows
            v.grid.move_rows = lambda src, f=grid_move: (moved.append(step), f(src))
        v.apply_snapshot(snap)
        fresh = BlockTablesView()
        fresh.apply_snapshot(snap)
        np.testing.assert_array_equal(v.image.pixels(), fresh.image.pixels())
        assert v.grid.cols == grid_columns(v.table.shape[1]) >= v.table.shape[1]
        qapp.processEvents()
        ax = v.plot.getAxis("left")
        img = QImage(8, 8, QImage.Format.Format_ARGB32)
        p = QPainter(img)
        _, ticks, texts = ax.generateDrawSpecs(p)
        p.end()
        shown = [t for _, _, t in texts]
        assert shown and all(t.startswith("seq ") for t in shown)
        assert set(shown) <= {f"seq {s}" for s in v.seq_ids}
        for rect, _, text in texts:          # each label at the centre of its sequence's row
            row = v.seq_ids.index(int(text.split()[1]))
            want = v.plot.vb.mapViewToScene(QPointF(0, row + 0.5)).y()
            assert ax.mapToScene(rect.center()).y() == pytest.approx(want, abs=1.0)
        assert len(ticks) == len(texts)
        if before and before != v.seq_ids and shape == (v.grid.rows, v.grid.cols):
            assert step in moved               # rows shifted: moved, not redrawn
    assert moved
    # every row labelled in a short view (a label step from a height not laid out yet):
    # the labels that would overlap are left out
    v.resize(700, 160)
    qapp.processEvents()
    ax.set_labels([(i + 0.5, f"seq {s}") for i, s in enumerate(v.seq_ids)])
    p = QPainter(img)
    texts = ax.generateDrawSpecs(p)[2]
    p.end()
    assert 0 < len(texts) < len(v.seq_ids)
    for (a, _, _), (b, _, _) in zip(texts, texts[1:]):
        assert not a.intersects(b)


def test_a_growing_timeline_does_not_lay_the_window_out_again(qapp):
    """The history grows with every snapshot: the timeline's range follows it without
    asking its parent's layout again (that repainted the whole window per snapshot)."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget
    from app.serving.timeline import TimelineWidget
    parent = QWidget()
    tl = TimelineWidget()
    QVBoxLayout(parent).addWidget(tl)
    parent.show()
    tl.set_range(0, 10)
    for _ in range(5):                 # the first layout settles
        qapp.processEvents()
    asked = layout_requests(tl, parent)
    for last in (11, 500, 99_999, 1_000_000):
        tl.set_range(0, last)
        qapp.processEvents()
    assert asked.n == 0
    assert tl.goto.maximum() == 1_000_000 and tl.label.text() == "live: step 1000000"
    assert tl.goto.width() >= tl.goto.fontMetrics().horizontalAdvance("go to 1000000")


def test_a_drag_repaints_the_timeline_not_the_widgets_under_it(qapp):
    """The slider, step label and go-to box change every frame of a drag: the timeline
    fills its own background, so its parents (in the app: the tab and the main window)
    do not paint under them first."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget
    from app.serving.timeline import TimelineWidget
    parent = QWidget()
    tl = TimelineWidget()
    QVBoxLayout(parent).addWidget(tl)
    parent.resize(800, 100)
    parent.show()
    # on a loaded X server the window is exposed (and so painted) some time after show():
    # counting starts once it is, and each seek is given until its own repaint arrives
    from PySide6.QtTest import QTest
    assert QTest.qWaitForWindowExposed(parent, 10000)
    tl.set_range(0, 500)
    for _ in range(5):
        qapp.processEvents()
    under, own = paints(parent), paints(tl.slider)
    for step in (10, 50, 90):
        seen = own.n
        tl.seek(step)
        deadline = time.monotonic() + 5.0
        while own.n == seen and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.005)
    assert own.n > 0 and under.n == 0
