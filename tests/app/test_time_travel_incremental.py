"""A time-travel step redraws only the blocks the history names as changed since the
step drawn before (`Snapshot.changes`); what the pool and the block tables then show
must be exactly what a full apply of that step shows, at random cursor jumps forward
and backward, near and across many snapshots and keyframes."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

BLOCKS = 2048


@pytest.fixture(scope="module")
def history():
    from app.bench.time_travel_gui import record_run
    from tinyserve_core.observe.history import History
    hist = History(BLOCKS, 16, keyframe_every=24)      # far jumps start from a keyframe
    for d in record_run(BLOCKS, 400):
        hist.ingest(d)
    return hist


def _fresh(snap):
    """Views that never drew anything before: the full apply."""
    import dataclasses
    from app.serving.pool_view import BlockPoolView
    from app.serving.tables_view import BlockTablesView
    full = dataclasses.replace(snap, changes=None)
    pv, tv = BlockPoolView(), BlockTablesView()
    pv.apply_snapshot(full, now=0.0)
    pv.render(now=0.0)
    tv.apply_snapshot(full)
    return pv, tv


def _same(pv, tv, snap):
    fpv, ftv = _fresh(snap)
    np.testing.assert_array_equal(pv.animator.image, fpv.animator.image)
    np.testing.assert_array_equal(pv.image.pixels(), fpv.image.pixels())
    for got, want in zip(pv.animator.channels.chans, fpv.animator.channels.chans):
        np.testing.assert_array_equal(got, want)
    assert pv.header.text() == fpv.header.text()
    assert tv.seq_ids == ftv.seq_ids
    np.testing.assert_array_equal(tv.table, ftv.table)
    np.testing.assert_array_equal(tv.image.pixels(), ftv.image.pixels())
    assert tv.header.text() == ftv.header.text()


def _spy_cells(pv):
    """Counts the pool grid's updates: (cell by cell from the changes, whole)."""
    g, calls = pv.animator.grid, {"cells": 0, "whole": 0}
    cells, whole = g.update_cells, g.update_channels
    g.update_cells = lambda *a: (calls.__setitem__("cells", calls["cells"] + 1), cells(*a))
    g.update_channels = lambda *a: (calls.__setitem__("whole", calls["whole"] + 1), whole(*a))
    return calls


def test_scrubbed_views_equal_a_full_apply_at_random_jumps(qapp, history):
    from app.serving.pool_view import BlockPoolView
    from app.serving.tables_view import BlockTablesView
    from app.serving.time_travel import past_snapshot
    pv, tv = BlockPoolView(), BlockTablesView()
    rng = np.random.default_rng(12)
    step = 200
    pv.apply_snapshot(past_snapshot(history.state_at(step)), now=0.0)
    calls = _spy_cells(pv)
    kinds = set()
    for i in range(60):
        # near steps (a drag, either way), far jumps (across many keyframes), and the
        # same step again
        kind = ("near", "far", "same")[i % 3] if i % 7 else "far"
        jump = {"near": int(rng.integers(-6, 7)), "far": int(rng.integers(-390, 390)), "same": 0}[kind]
        step = int(np.clip(step + jump, history.first_step, history.last_step))
        snap = past_snapshot(history.state_at(step))
        assert snap.changes is not None and snap.changes[0] == pv.animator.channels.serial
        kinds.add((kind, len(snap.changes[2]) < BLOCKS))
        pv.apply_snapshot(snap, now=0.0)
        pv.render(now=0.0)
        tv.apply_snapshot(snap)
        if i % 4 == 0 or kind == "far":
            _same(pv, tv, snap)
    assert calls["cells"] == 60 and calls["whole"] == 0      # only the named blocks looked at
    assert ("near", True) in kinds and ("far", True) in kinds
    _same(pv, tv, snap)


def test_a_step_answered_for_someone_else_between_two_draws_redraws_in_full(qapp, history):
    """The history's answers form a chain; a view that missed one (another reader asked
    the history in between) cannot use the next one's changes: it applies in full, and
    a live snapshot (no changes) too."""
    import dataclasses
    from app.serving.pool_view import BlockPoolView
    from app.serving.tables_view import BlockTablesView
    from app.serving.time_travel import past_snapshot
    pv, tv = BlockPoolView(), BlockTablesView()
    for s in (100, 104):
        snap = past_snapshot(history.state_at(s))
        pv.apply_snapshot(snap, now=0.0)
        tv.apply_snapshot(snap)
    calls = _spy_cells(pv)
    history.state_at(300)                          # an answer this view never drew
    snap = past_snapshot(history.state_at(305))
    assert snap.changes[0] != pv.animator.channels.serial
    pv.apply_snapshot(snap, now=0.0)
    pv.render(now=0.0)
    tv.apply_snapshot(snap)
    assert calls == {"cells": 0, "whole": 1}
    _same(pv, tv, snap)
    live = dataclasses.replace(past_snapshot(history.state_at(120)), changes=None, step=10**6)
    assert not pv.animator.channels.follows(live.changes)
    pv.apply_snapshot(live, now=0.0)
    pv.render(now=0.0)
    tv.apply_snapshot(live)
    assert pv.animator.channels.serial is None and calls["whole"] == 2
    _same(pv, tv, live)
    # and the answer after the live one, though it follows the history's last answer,
    # is not what the view drew last: in full again
    snap = past_snapshot(history.state_at(121))
    pv.apply_snapshot(snap, now=0.0)
    pv.render(now=0.0)
    tv.apply_snapshot(snap)
    assert calls["whole"] == 3
    _same(pv, tv, snap)


def test_block_channels_from_changes_equal_a_full_compute():
    from app.serving.pool_image import BlockChannels
    rng = np.random.default_rng(3)
    n = 300
    state = [rng.integers(0, 4, n), rng.integers(-1, 30, n), rng.random(n).astype(np.float32),
             rng.random(n) < 0.3]
    inc = BlockChannels(4)
    inc.update(*state, (None, 1, None))            # no answer before: computed whole
    for serial in range(2, 30):
        ids = np.unique(rng.integers(0, n, rng.integers(0, 40)))
        state[0][ids] = rng.integers(0, 4, ids.size)
        state[1][ids] = rng.integers(-1, 30, ids.size)
        state[2][ids] = rng.random(ids.size)
        state[3][ids] = rng.random(ids.size) < 0.3
        got = inc.update(*state, (serial - 1, serial, ids))
        want = BlockChannels(4).update(*state)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert got[0][-1] == got[1][-1] == 0 and got[2][-1] == 4     # the PAD cell after the last block
