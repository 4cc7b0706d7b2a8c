"""What a timeline drag costs stays bounded: the drag's moves are shown once per
event-loop pass (newest wins), the block tables redraw only changed cells yet match a
fresh view, and the metric plots keep their window while the cursor moves inside it."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_metric_plots_keep_their_window_while_the_cursor_is_inside(qapp):
    from app.serving.metrics_view import MetricsView
    from app.serving.snapshot import COL, METRIC_COLUMNS
    mv = MetricsView(window_s=30.0)
    rows = np.zeros((100, len(METRIC_COLUMNS)))
    rows[:, COL["clock"]] = np.linspace(0.0, 60.0, 100)
    mv.add(rows, np.zeros((0, 3)))
    mv.render()
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
