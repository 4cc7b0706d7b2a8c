"""Time-travel history: a jump to any step gives back exactly the state recorded live at
that step, however the keyframes fall and after the oldest steps are dropped."""

from __future__ import annotations

import numpy as np
import pytest

from tinyserve_core.kv.block_manager import BlockManager
from tinyserve_core.observe.events import EventSink
from tinyserve_core.observe.history import DeltaRecorder, History


def _random_run(seed: int, steps: int, num_blocks: int = 64, block_size: int = 4):
    """A BlockManager under random admissions, decodes, forks and frees (with a shared
    prefix so hits, evictions and copy-on-write happen); yields the live state per step."""
    rng = np.random.default_rng(seed)
    sink = EventSink()
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=True, sink=sink)
    prefix = rng.integers(0, 50, 3 * block_size).tolist()
    toks: dict[int, list[int]] = {}
    nxt = 0
    for step in range(1, steps + 1):
        op = rng.random()
        if op < 0.3 or not toks:
            t = prefix[: rng.integers(0, len(prefix) + 1)] + rng.integers(0, 50, rng.integers(1, 9)).tolist()
            if bm.can_allocate(t):
                bm.allocate(nxt, t)
                bm.cache_full_blocks(nxt, t, len(t))
                toks[nxt] = t
                nxt += 1
        elif op < 0.4:
            parent = int(rng.choice(list(toks)))
            bm.fork(parent, nxt)
            toks[nxt] = list(toks[parent])
            nxt += 1
        elif op < 0.55:
            victim = int(rng.choice(list(toks)))
            bm.free(victim)
            del toks[victim]
        else:
            for s in list(toks):
                if bm.can_append(s):
                    toks[s].append(int(rng.integers(0, 50)))
                    bm.append_slot(s, len(toks[s]))
                    bm.cache_full_blocks(s, toks[s], len(toks[s]) - 1)
        tables = {s: bm.block_table(s) for s in toks}
        yield step, bm.blocks_snapshot(), tables, sink.drain()


def _check(hist: History, step: int, live) -> None:
    snap, tables = live
    got = hist.state_at(step)
    assert got.step == step
    for name in ("ref_cnt", "owner", "num_tokens", "is_cached", "evictable"):
        np.testing.assert_array_equal(getattr(got.pool, name), getattr(snap, name), err_msg=name)
    assert got.tables == {s: tuple(t) for s, t in tables.items()}


@pytest.mark.parametrize("seed,keyframe_every", [(0, 1), (1, 7), (2, 64), (3, 1000)])
def test_jump_equals_the_state_recorded_live(seed, keyframe_every):
    rec, hist, live = DeltaRecorder(), History(64, 4, keyframe_every=keyframe_every), {}
    kinds = set()
    for step, snap, tables, events in _random_run(seed, 300):
        hist.ingest(rec.record(step, step * 0.1, snap, tables, events, {s: f"r{s}" for s in tables}))
        live[step] = (snap, tables)
        kinds |= {e.kind for e in events}
    assert {"prefix_hit", "cow_copy", "evict", "fork", "free"} <= kinds   # the workload is rich
    rng = np.random.default_rng(seed)
    for step in [1, 300, *rng.integers(1, 301, 40).tolist()]:
        _check(hist, int(step), live[int(step)])
    assert hist.clock_at(150) == pytest.approx(15.0)


def test_events_and_requests_are_kept_per_step():
    rec, hist = DeltaRecorder(), History(64, 4)
    by_step = {}
    for step, snap, tables, events in _random_run(5, 120):
        hist.ingest(rec.record(step, 0.0, snap, tables, events, {s: f"r{s}" for s in tables}))
        by_step[step] = [e for e in events if e.kind not in ("schedule", "page_selection")]
    assert [e for _, e in hist.events(10, 12)] == by_step[10] + by_step[11] + by_step[12]
    assert hist.state_at(40).events == tuple(by_step[40])
    assert hist.requests and all(r == f"r{s}" for s, r in hist.requests.items())
    first = hist.first_steps(["evict", "fork"])
    assert by_step[first["fork"]] and any(e.kind == "fork" for e in by_step[first["fork"]])
    assert not any(e.kind == "fork" for s in range(1, first["fork"]) for e in by_step[s])


def test_memory_stays_bounded_and_the_recent_past_stays_exact():
    rec, live = DeltaRecorder(), {}
    hist = History(64, 4, keyframe_every=16, max_bytes=150_000)
    for step, snap, tables, events in _random_run(7, 1500):
        hist.ingest(rec.record(step, 0.0, snap, tables, events, {}))
        live[step] = (snap, tables)
        assert hist.nbytes() <= 150_000
    assert hist.first_step > 1 and hist.last_step == 1500
    for step in (hist.first_step, hist.first_step + 5, (hist.first_step + 1500) // 2, 1500):
        _check(hist, step, live[step])
    with pytest.raises(IndexError):
        hist.state_at(1)


def test_a_gap_in_the_steps_is_refused():
    rec, hist = DeltaRecorder(), History(64, 4)
    run = _random_run(0, 3)
    step, snap, tables, events = next(run)
    hist.ingest(rec.record(step, 0.0, snap, tables, events, {}))
    next(run)
    step, snap, tables, events = next(run)
    with pytest.raises(ValueError, match="does not follow"):
        hist.ingest(rec.record(step, 0.0, snap, tables, events, {}))


def test_a_scrub_replays_only_the_steps_between_forward_and_backward():
    """Steps near the one last shown are answered from it (the entries between the two,
    undone when going back), and equal a rebuild from the keyframe at every step."""
    rec, hist, live = DeltaRecorder(), History(64, 4, keyframe_every=10_000, replay_blocks=1000), {}
    entries = {}
    for step, snap, tables, events in _random_run(11, 400):
        d = rec.record(step, 0.0, snap, tables, events, {})
        hist.ingest(d)
        live[step] = (snap, tables)
        entries[step] = d.blocks.size + d.filled.size
    rng = np.random.default_rng(3)
    step = 200
    hist.state_at(step)
    for _ in range(150):
        nxt = int(np.clip(step + rng.integers(-6, 7), 1, 400))
        _check(hist, nxt, live[nxt])
        lo, hi = sorted((step, nxt))
        assert hist.last_replayed == sum(entries[s] for s in range(lo + 1, hi + 1))
        step = nxt
    # a far jump is answered from the keyframe, and the scrub goes on from there
    _check(hist, 3, live[3])
    assert hist.last_replayed == sum(entries[s] for s in range(2, 4))
    _check(hist, 2, live[2])
    _check(hist, 400, live[400])


def test_each_answer_names_the_blocks_changed_since_the_one_before():
    """`changed_since` = (serial of the answer before, ids): every block whose state
    differs between the two answers is named, forward, backward, across many keyframes
    (a far jump) and after the oldest steps are dropped (then no answer before)."""
    rec, hist, live = DeltaRecorder(), History(64, 4, keyframe_every=16, replay_blocks=1000), {}
    for step, snap, tables, events in _random_run(5, 500):
        hist.ingest(rec.record(step, 0.0, snap, tables, events, {}))
        live[step] = (snap, tables)
    first = hist.state_at(250)
    assert first.changed_since is None and first.serial > 0
    prev, rng = first, np.random.default_rng(7)
    named = []
    for _ in range(200):
        jump = int(rng.choice([rng.integers(-5, 6), rng.integers(-300, 300)]))
        step = int(np.clip(prev.step + jump, 1, 500))
        got = hist.state_at(step)
        np.testing.assert_array_equal(got.pool.ref_cnt, live[step][0].ref_cnt)
        base, ids = got.changed_since
        assert base == prev.serial and got.serial > prev.serial
        assert ids.size == np.unique(ids).size
        diff = np.zeros(64, bool)
        for name in ("ref_cnt", "owner", "num_tokens", "is_cached", "evictable"):
            diff |= getattr(got.pool, name) != getattr(prev.pool, name)
        assert set(np.flatnonzero(diff).tolist()) <= set(ids.tolist()), (prev.step, step)
        named.append(ids.size)
        prev = got
    assert min(named) < 64                   # near steps name a part of the pool, not all of it
    small = History(64, 4, keyframe_every=8, max_bytes=1)    # drops its oldest steps as it grows
    rec = DeltaRecorder()
    runs = list(_random_run(6, 60))
    for step, snap, tables, events in runs[:40]:
        small.ingest(rec.record(step, 0.0, snap, tables, events, {}))
    small.state_at(small.last_step)
    for step, snap, tables, events in runs[40:]:
        small.ingest(rec.record(step, 0.0, snap, tables, events, {}))
    assert small.state_at(small.last_step).changed_since is None


def test_an_answer_from_a_keyframe_compares_only_when_asked_and_once(monkeypatch):
    """A jump answered from a keyframe stays cheap: the comparison with the answer before
    runs on the first read of `changed_since`, and a second read returns the same ids."""
    from tinyserve_core.observe import history
    calls = []
    compare = history._changed_blocks
    monkeypatch.setattr(history, "_changed_blocks", lambda *a: calls.append(1) or compare(*a))
    rec, hist = DeltaRecorder(), History(64, 4, keyframe_every=4, replay_blocks=1000)
    for step, snap, tables, events in _random_run(3, 100):
        hist.ingest(rec.record(step, 0.0, snap, tables, events, {}))
    before = hist.state_at(90)
    got = hist.state_at(5)                  # far back: from the keyframe at or before it
    assert calls == []
    base, ids = got.changed_since
    assert base == before.serial and calls == [1]
    assert got.changed_since[1] is ids and calls == [1]
    diff = np.zeros(64, bool)
    for name in ("ref_cnt", "owner", "num_tokens", "is_cached", "evictable"):
        diff |= getattr(got.pool, name) != getattr(before.pool, name)
    np.testing.assert_array_equal(ids, np.flatnonzero(diff))
