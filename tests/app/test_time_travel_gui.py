"""Time travel, the event log and the story caption, driven through the Serving tab's
real widgets on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.gui


def _step_and_pull(tab, qtbot, n):
    """Single steps, taking each step's snapshot: {step: snapshot} as they were live."""
    live = {}
    for _ in range(n):
        want = tab.worker.steps_done + 1
        tab.worker.step_once()

        def got():
            tab.frame()
            s = getattr(tab, "last_snapshot", None)
            return s is not None and s.step >= want
        qtbot.waitUntil(got, timeout=60000)
        s = tab.last_snapshot
        live[s.step] = s
    return live


def test_timeline_shows_every_view_at_a_past_step_and_end_returns_live(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=4, prompt_len=10, prompt_len_max=14))
    tab = w.serving
    tt = tab.time_travel
    live = _step_and_pull(tab, qtbot, 10)
    assert tt.live and tt.history.last_step == 10
    past = 4
    tt.timeline.seek(past)
    assert not tt.live and "step 4 / 10" in tt.timeline.label.text() and tt.timeline.goto.value() == 4
    pv, then = tab.pool_view.pool, live[past].pool
    for name in ("ref_cnt", "owner", "fill", "evictable"):
        np.testing.assert_array_equal(getattr(pv, name), getattr(then, name), err_msg=name)
    assert tab.tables_view.seq_ids == sorted(live[past].tables)
    assert "step 4 " in tab.pool_view.header.text()
    assert tab.metrics_view.cursor_clock == pytest.approx(live[past].clock)
    assert sum(line.isVisible() for line in tt.cursor_lines) == 3   # a few per frame, in turns
    tab.frame()     # the frame the step was shown in: its three lines have moved already
    assert sum(line.isVisible() for line in tt.cursor_lines) == 3
    for _ in range(2):
        tab.frame()
    assert all(line.isVisible() and line.value() == pytest.approx(live[past].clock) for line in tt.cursor_lines)
    # a block clicked or hovered in the past is described as it was then, not asked of the engine
    bid = int(np.flatnonzero(then.ref_cnt)[0])
    tab._on_block_clicked(bid)
    assert tab.details.toPlainText().startswith(f"block {bid} at step 4 (time travel)")
    assert f"refcount {int(then.ref_cnt[bid])}," in tab.details.toPlainText()
    assert "as at step 4" in tab.pool_view.tooltip_text(bid)
    qtbot.waitUntil(lambda: bool(tt.log.entries) and max(e.step for e in tt.log.entries) <= past, timeout=5000)

    # the engine goes on; the past stays on screen
    _step_and_pull(tab, qtbot, 2)
    np.testing.assert_array_equal(tab.pool_view.pool.ref_cnt, live[past].pool.ref_cnt)
    assert tt.timeline.last == 12

    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    qtbot.keyClick(tab.pool_view, Qt.Key.Key_End)
    assert tt.live and tab.metrics_view.cursor_clock is None
    np.testing.assert_array_equal(tab.pool_view.pool.ref_cnt, tab.last_snapshot.pool.ref_cnt)

    # a step typed in (from a trace slice's args.step)
    tt.timeline.goto.setValue(7)
    tt.timeline.goto.editingFinished.emit()
    assert tt.timeline.cursor == 7 and tab.pool_view.header.text().count("step 7 ") == 1
    qtbot.keyClick(tab.pool_view, Qt.Key.Key_End)

    # play forward from the past runs up to the present and goes live
    tt.timeline.seek(9)
    tt.timeline.play(+1)
    qtbot.waitUntil(lambda: tt.live, timeout=5000)
    tt.timeline.seek(3)
    tt.timeline.play(-1)
    qtbot.waitUntil(lambda: tt.timeline.cursor == 1, timeout=5000)
    qtbot.keyClick(tab.pool_view, Qt.Key.Key_L)
    assert tt.live


def test_event_log_in_words_filters_and_selects(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=3, prompt_len=10, prompt_len_max=10))
    tab = w.serving
    tt = tab.time_travel
    _step_and_pull(tab, qtbot, 8)
    log = tt.log
    log.refresh()
    assert log.kind_box.currentText() == "memory events"
    texts = [e.text for e in log.entries]
    assert any("forked into 2 samples sharing" in t for t in texts)
    assert any(t.startswith("copy-on-write block") for t in texts)
    assert [e.step for e in log.entries] == sorted((e.step for e in log.entries), reverse=True)

    log.kind_box.setCurrentIndex(log.kind_box.findData("cow_copy"))
    assert log.entries and all(e.kind == "cow_copy" for e in log.entries)
    cow = log.entries[0]
    log.list.itemClicked.emit(log.list.item(0))
    assert tt.selected == cow
    assert len(tt.marks.data) >= 2                        # src and dst outlined in the pool
    qtbot.waitUntil(lambda: (tab.frame() or True) and
                    tab.details.toPlainText().startswith(f"block {cow.blocks[1]}"), timeout=10000)

    log.kind_box.setCurrentIndex(log.kind_box.findData(None))          # all kinds
    assert any(e.kind == "arrive" for e in log.entries)
    log.kind_box.setCurrentIndex(0)                                     # memory events: the default
    assert log.entries and not any(e.kind in ("arrive", "finish") for e in log.entries)
    req = next(e.request_id for e in log.entries if e.request_id)
    log.who.setText(req)
    assert log.entries and all(e.request_id == req for e in log.entries)

    # synchronised with time travel: at step 1 only step-1 events, marked as current
    tt.timeline.seek(1)
    log.who.setText("")
    qtbot.waitUntil(lambda: log.entries and {e.step for e in log.entries} == {1}, timeout=5000)
    from app.serving.event_log import CURRENT
    assert log.list.item(0).background().color() == CURRENT


def test_story_caption_names_beats_and_stays_dismissed(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=3, prompt_len=10, prompt_len_max=10))
    tab = w.serving
    cap = tab.time_travel.caption
    _step_and_pull(tab, qtbot, 4)
    assert cap.isVisible() and "What you are seeing" in cap.text.text()
    assert {"fork", "cow_copy"} <= set(tab.time_travel.story.seen)
    qtbot.mouseClick(cap.close_btn, Qt.MouseButton.LeftButton)
    assert not cap.isVisible()
    _step_and_pull(tab, qtbot, 2)
    assert not cap.isVisible()


def test_selection_heatmap_is_cut_at_the_step_shown():
    from app.serving.selection_data import SelectionView
    from app.serving.time_travel import selection_until
    S, T = 6, 8
    v = SelectionView((1, 0, 0), "quest", np.arange(10, 10 + S), np.random.rand(4, S).astype(np.float32),
                      np.ones((4, S), bool), np.zeros((4, S), bool), False, np.full(S, 4), [0], [0],
                      np.arange(8, 8 + T), np.random.rand(T, 1).astype(np.float32),
                      np.random.rand(T, 1).astype(np.float32), np.zeros(T, np.float32), [0])
    cut = selection_until(v, 12)
    assert list(cut.steps) == [10, 11, 12] and cut.scores.shape == (4, 3)
    np.testing.assert_array_equal(cut.scores, v.scores[:, :3])
    assert list(cut.series_steps) == [8, 9, 10, 11, 12] and cut.selection_recall.shape == (5, 1)
    assert selection_until(v, 9) is None and selection_until(None, 50) is None
