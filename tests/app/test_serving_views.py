"""Hover/click details, block tables, kernel timings and remembered settings."""

from __future__ import annotations

import numpy as np
import pytest

from app.main_window import MainWindow, last_config

pytestmark = pytest.mark.gui


def _pull(tab, qtbot, pred, timeout=60000):
    def check():
        tab.frame()
        s = getattr(tab, "last_snapshot", None)
        return s is not None and pred(s)
    qtbot.waitUntil(check, timeout=timeout)
    return tab.last_snapshot


def test_click_shows_block_details_with_decoded_text(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=2, prompt_len=10, prompt_len_max=10), mode="thread")
    tab = w.serving
    tab.worker.step_n(3)
    snap = _pull(tab, qtbot, lambda s: s.step >= 3)
    used = np.flatnonzero(snap.pool.ref_cnt > 0)
    shared = np.flatnonzero(snap.pool.ref_cnt > 1)
    bid = int(shared[0] if shared.size else used[0])
    tab.pool_view.block_clicked.emit(bid)
    qtbot.waitUntil(lambda: (tab.frame() or True) and "owners" in tab.details.toPlainText(), timeout=60000)
    text = tab.details.toPlainText()
    info = tab.worker._host.sim.engine.block_manager.block_info(bid)
    assert f"block {bid}" in text
    assert f"refcount: {info.ref_cnt} (" in text and f"fill: {info.fill} of 4 tokens" in text
    assert "hash: " in text and "evictable: " in text
    assert "owners (seq ids): " + ", ".join(map(str, info.owners)) in text
    decoded = tab.worker._host.sim.engine.tokenizer.decode(list(info.token_ids))
    assert repr(decoded) in text
    # the tooltip carries the same facts, from the snapshot plus the engine's answer
    tip = tab.pool_view.tooltip_text(bid)
    assert f"refcount {int(snap.pool.ref_cnt[bid])}" in tip and "owners" in tip
    assert f"fill {info.fill} of 4 tokens" in tip


def test_block_tables_and_kernel_timings_follow_the_engine(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=3), mode="thread")
    tab = w.serving
    tab.worker.step_n(4)
    snap = _pull(tab, qtbot, lambda s: s.step >= 4 and len(s.tables) > 0)
    running = tab.worker._host.sim.engine.running_tables()
    assert tab.tables_view.seq_ids == sorted(running)
    for i, s in enumerate(tab.tables_view.seq_ids):
        row = tab.tables_view.table[i]
        assert list(row[row >= 0]) == running[s]
    tab.kernels_view.render()
    assert tab.kernels_view.ops and "total" in tab.kernels_view.ops
    assert tab.kernels_view.table.rowCount() == len(tab.kernels_view.ops)
    assert "reference" in tab.kernels_view.backend.text() or "CUDA" in tab.kernels_view.backend.text()


def test_settings_remember_last_config_and_layout(make_window, gui_config, qtbot, settings):
    w = make_window(gui_config(rate=12.5), mode="thread")
    w.serving.docks["Kernels"].setFloating(True)
    w.close()
    assert last_config(settings).workload.rate == 12.5
    w2 = MainWindow(None, settings=settings, engine_mode="thread", extra_tabs=False)
    qtbot.addWidget(w2)
    try:
        assert w2.serving.config.workload.rate == 12.5
        assert w2.serving.docks["Kernels"].isFloating()
    finally:
        w2.serving.shutdown()
