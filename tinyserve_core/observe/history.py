"""Time travel over an engine run: what the pool, the block tables and the events were
at any past step, with bounded memory and a bounded cost per jump.

The engine side turns each step into a `StepDelta` (`DeltaRecorder.record`): the blocks
whose state changed (refcount, first owner, cached/evictable flags), apart from the blocks
whose fill changed (tokens stored: every decode step fills one slot per running sequence,
so this stream is the busy one and costs 5 bytes an entry), the running block tables that
changed (kept prefix + appended ids), the step's events and the request of every sequence
first seen. The events alone cannot rebuild a pool: a decode step fills a slot and a
finished block gains its hash without any event, so the delta carries the changed cells
themselves, found by one vectorised comparison with the previous step.

`History` stores the deltas in flat columns (one growing numpy array per field, no
object per step) and a keyframe, the whole state, every `keyframe_every` steps or as
soon as the entries since the last keyframe outnumber the blocks. A jump to step s is
the nearest keyframe at or before s plus the entries after it up to s, applied in one
vectorised assignment (last write wins): its cost is bounded by the keyframe rule, not
by the length of the run. A scrub asks for steps near the one last answered, so that
answer is kept as a cursor and used as the base whenever fewer entries lie between:
forward it replays the entries in between, backward it restores the value each entry
replaced (kept beside it, a few bytes an entry); the block tables have a copy every
TABLES_EVERY steps. Each answer names the blocks changed since the one before (a view
redraws only those); past `max_bytes` the oldest keyframe interval is dropped.

Qt-free and kv-free (observe sits below kv): the recorder reads any object with the
`BlocksSnapshot` array names."""

from __future__ import annotations

import bisect
import functools
import itertools
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .events import Event

CACHED, EVICTABLE = 1, 2           # bits of the per-block flags
# per-step kinds the history leaves out: a schedule is one per step (page selections
# are no events: they travel as columns in StepRecord.selection, with their own view)
SKIPPED_KINDS = frozenset({"schedule"})
TableChange = tuple[int, int, tuple[int, ...]]   # (seq, kept prefix length or -1 = gone, appended)


@dataclass(frozen=True, slots=True)
class StepDelta:
    step: int
    clock: float
    blocks: np.ndarray        # int32 [k] ids of the blocks whose state changed
    ref_cnt: np.ndarray       # int32 [k] their new values ...
    owner: np.ndarray         # int64 [k]
    flags: np.ndarray         # uint8 [k] CACHED | EVICTABLE
    filled: np.ndarray        # int32 [f] ids of the blocks whose fill changed
    num_tokens: np.ndarray    # uint8 [f] (block sizes are at most 128 tokens)
    tables: tuple[TableChange, ...]
    events: tuple[Event, ...]
    requests: tuple[tuple[int, str], ...]   # (seq id, request id) of sequences first seen


@dataclass
class PoolState:
    """The `BlocksSnapshot` arrays of one step (the views' contract)."""
    block_size: int
    ref_cnt: np.ndarray       # int32
    owner: np.ndarray         # int64
    num_tokens: np.ndarray    # int32
    is_cached: np.ndarray     # bool
    evictable: np.ndarray     # bool

    @property
    def num_blocks(self) -> int:
        return int(self.ref_cnt.shape[0])


@dataclass
class PastStep:
    step: int
    clock: float
    pool: PoolState
    tables: dict[int, tuple[int, ...]]     # running seq -> physical block ids
    events: tuple[Event, ...]              # what happened in this step
    serial: int = -1      # which answer this is (unique across histories)
    since: int | None = None   # serial of the history's answer before this one
    # ids changed since it, or (from a keyframe) a comparison run when asked: jumps stay cheap
    changed: np.ndarray | Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @functools.cached_property
    def changed_since(self) -> tuple[int, np.ndarray] | None:
        """(since, ids of the blocks that may differ from that answer), None when there
        was none: a view that drew that answer redraws only those blocks."""
        ids = self.changed() if callable(self.changed) else self.changed
        return None if self.since is None else (self.since, ids)


def _changed_blocks(before: tuple, after: tuple) -> np.ndarray:   # ids whose state differs
    return np.flatnonzero(np.any([a != b for a, b in zip(after, before)], axis=0))


def _flags(is_cached: np.ndarray, evictable: np.ndarray) -> np.ndarray:
    return is_cached.astype(np.uint8) | (evictable.astype(np.uint8) << 1)


class DeltaRecorder:
    """Engine side: one StepDelta per step, against the state of the previous step."""

    def __init__(self):
        self._prev: tuple[np.ndarray, ...] | None = None
        self._tables: dict[int, tuple[int, ...]] = {}
        self._seen: set[int] = set()

    def record(self, step: int, clock: float, blocks, tables: Mapping[int, Iterable[int]],
               events: Iterable[Event], requests: Mapping[int, str]) -> StepDelta:
        cur = (np.asarray(blocks.ref_cnt, np.int32), np.asarray(blocks.owner, np.int64),
               _flags(blocks.is_cached, blocks.evictable), np.asarray(blocks.num_tokens, np.uint8))
        prev = self._prev
        if prev is None or prev[0].shape != cur[0].shape:
            n = cur[0].shape[0]
            prev = (np.zeros(n, np.int32), np.full(n, -1, np.int64), np.zeros(n, np.uint8),
                    np.zeros(n, np.uint8))
        idx = np.flatnonzero((cur[0] != prev[0]) | (cur[1] != prev[1]) | (cur[2] != prev[2]))
        fidx = np.flatnonzero(cur[3] != prev[3])
        self._prev = cur
        return StepDelta(int(step), float(clock), idx.astype(np.int32), cur[0][idx], cur[1][idx],
                         cur[2][idx], fidx.astype(np.int32), cur[3][fidx],
                         self._table_changes(tables),
                         tuple(e for e in events if e.kind not in SKIPPED_KINDS),
                         self._new_requests(requests))

    def _table_changes(self, tables: Mapping[int, Iterable[int]]) -> tuple[TableChange, ...]:
        out: list[TableChange] = []
        now = {int(s): tuple(int(b) for b in t) for s, t in tables.items()}
        for seq, t in now.items():
            old = self._tables.get(seq)
            if old == t:
                continue
            keep = 0
            if old is not None:
                m = min(len(old), len(t))
                while keep < m and old[keep] == t[keep]:
                    keep += 1
            out.append((seq, keep, t[keep:]))
        out.extend((seq, -1, ()) for seq in self._tables.keys() - now.keys())
        self._tables = now
        return tuple(out)

    def _new_requests(self, requests: Mapping[int, str]) -> tuple[tuple[int, str], ...]:
        fresh = tuple((int(s), str(r)) for s, r in requests.items() if s not in self._seen)
        self._seen.update(s for s, _ in fresh)
        return fresh


class _Column:
    """A growing 1-D numpy array (amortised O(1) appends of whole arrays)."""

    def __init__(self, dtype):
        self.a = np.zeros(1024, dtype)
        self.n = 0

    def extend(self, v: np.ndarray) -> None:
        k = v.shape[0]
        if self.n + k > self.a.shape[0]:
            grown = np.zeros(max(2 * self.a.shape[0], self.n + k), self.a.dtype)
            grown[: self.n] = self.a[: self.n]
            self.a = grown
        self.a[self.n: self.n + k] = v
        self.n += k

    def view(self, lo: int, hi: int) -> np.ndarray:
        return self.a[lo:hi]

    def drop_before(self, k: int) -> None:
        self.a = self.a[k: self.n].copy() if self.n > k else np.zeros(1024, self.a.dtype)
        self.n = max(0, self.n - k)

    @property
    def nbytes(self) -> int:
        return self.a.nbytes          # what is allocated, growth slack included


_FIELDS = (("blocks", np.int32), ("ref_cnt", np.int32), ("owner", np.int64), ("flags", np.uint8),
           ("filled", np.int32), ("num_tokens", np.uint8))
# (index column, its value columns) in the order of the state arrays
_STREAMS = (("blocks", ("ref_cnt", "owner", "flags")), ("filled", ("num_tokens",)))
# each value column's value before the entry (what a step backward restores)
_OLD = tuple((f"old_{name}", dt) for name, dt in _FIELDS if name not in ("blocks", "filled"))
_STATE = ("ref_cnt", "owner", "flags", "num_tokens")    # the state arrays, in order
TABLES_EVERY = 32      # a copy of the block tables (shared tuples) every this many steps
_SERIALS = itertools.count(1)    # PastStep.serial: one counter for every History


@dataclass
class _Keyframe:
    index: int                         # step index (0 = first step held) this is the state after
    arrays: tuple[np.ndarray, ...]     # ref_cnt, owner, flags, num_tokens
    tables: dict[int, tuple[int, ...]]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays) + 8 * sum(len(t) + 4 for t in self.tables.values())


class History:
    """GUI side: every step since `first_step`, answerable at any step."""

    def __init__(self, num_blocks: int, block_size: int, keyframe_every: int = 2048,
                 max_bytes: int = 256 << 20, replay_blocks: int = 4):
        if keyframe_every < 1:
            raise ValueError("keyframe_every must be >= 1")
        self.num_blocks, self.block_size = int(num_blocks), int(block_size)
        self.keyframe_every, self.max_bytes = int(keyframe_every), int(max_bytes)
        # a keyframe once the entries since the last one reach replay_blocks x the pool:
        # bounds what a jump replays (one np.unique over them)
        self._kf_entries = max(1, int(replay_blocks) * int(num_blocks))
        self.first_step = 0                # step of index 0
        self._n = 0
        self._live = (np.zeros(num_blocks, np.int32), np.full(num_blocks, -1, np.int64),
                      np.zeros(num_blocks, np.uint8), np.zeros(num_blocks, np.uint8))
        self._live_tables: dict[int, tuple[int, ...]] = {}
        self._cols = {name: _Column(dt) for name, dt in (*_FIELDS, *_OLD)}
        self._off = {idx: _Column(np.int64) for idx, _ in _STREAMS}   # each step's first entry
        self._clock = _Column(np.float64)
        self._tab_off: list[int] = []              # offset into _tab of each step's changes
        self._tab: list[TableChange] = []
        # each step's events pickled: block ids as 1..5-byte varints instead of 36-byte
        # Python ints (most of a long history otherwise); read back only when asked for
        self._events: list[bytes] = []
        self._keyframes: list[_Keyframe] = []
        self._kf_index: list[int] = []
        self._since_kf = 0                          # entries since the last keyframe
        self._obj_bytes: list[int] = []             # per step: its table changes and events
        self.requests: dict[int, str] = {}          # seq id -> request id (all seen)
        self._obj_total = 0
        self._kf_total = 0
        self._tab_snaps: list[tuple[int, dict[int, tuple[int, ...]]]] = []   # (index, tables after it)
        self._tab_snap_total = 0
        # the state last answered (index, arrays, tables, serial): a scrub's next step is
        # near it, so it is the cheaper base (a few steps of entries, forward or backward)
        self._cursor: tuple[int, tuple[np.ndarray, ...], dict, int] | None = None
        self.last_replayed = 0

    # ---- recording ------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        return self.first_step + self._n - 1

    def __len__(self) -> int:
        return self._n

    def ingest(self, d: StepDelta) -> None:
        if self._n == 0:
            self.first_step = d.step
        elif d.step != self.last_step + 1:
            raise ValueError(f"step {d.step} does not follow step {self.last_step}")
        for ids in (d.blocks, d.filled):
            if ids.size and int(ids.max()) >= self.num_blocks:
                raise ValueError(f"block {int(ids.max())} outside a pool of {self.num_blocks}")
        for idx, _ in _STREAMS:
            self._off[idx].extend(np.array([self._cols[idx].n], np.int64))
        self._clock.extend(np.array([d.clock], np.float64))
        live = self._live
        for (name, _), arr, ids in zip(_OLD, live, (d.blocks, d.blocks, d.blocks, d.filled)):
            self._cols[name].extend(arr[ids])
        for name, _ in _FIELDS:
            self._cols[name].extend(getattr(d, name))
        for arr, vals in zip(live[:3], (d.ref_cnt, d.owner, d.flags)):
            arr[d.blocks] = vals
        live[3][d.filled] = d.num_tokens
        self._tab_off.append(len(self._tab))
        self._tab.extend(d.tables)
        _apply_tables(self._live_tables, d.tables)
        blob = pickle.dumps(d.events, pickle.HIGHEST_PROTOCOL) if d.events else b""
        self._events.append(blob)
        self._obj_bytes.append(_object_bytes(d, blob))
        self._obj_total += self._obj_bytes[-1]
        self.requests.update(d.requests)
        self._n += 1
        self._since_kf += int(d.blocks.size + d.filled.size)
        idx = self._n - 1
        if idx % TABLES_EVERY == 0:
            snap = dict(self._live_tables)
            self._tab_snaps.append((idx, snap))
            self._tab_snap_total += sys.getsizeof(snap)
        if (not self._kf_index or idx - self._kf_index[-1] >= self.keyframe_every
                or self._since_kf >= self._kf_entries):
            self._keyframes.append(_Keyframe(idx, tuple(a.copy() for a in live), dict(self._live_tables)))
            self._kf_total += self._keyframes[-1].nbytes
            self._kf_index.append(idx)
            self._since_kf = 0
        while self.nbytes() > self.max_bytes and len(self._keyframes) > 2:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Forget the steps before the second keyframe (it becomes the first one)."""
        k = self._kf_index[1]
        for idx, values in _STREAMS:
            off = self._off[idx]
            cut = int(off.a[k])
            for name in (idx, *values, *(f"old_{v}" for v in values)):
                self._cols[name].drop_before(cut)
            off.a[: off.n] -= cut
            off.drop_before(k)
        self._clock.drop_before(k)
        tcut = self._tab_off[k]
        self._tab = self._tab[tcut:]
        self._tab_off = [o - tcut for o in self._tab_off[k:]]
        self._events = self._events[k:]
        self._obj_total -= sum(self._obj_bytes[:k])
        self._obj_bytes = self._obj_bytes[k:]
        self._kf_total -= self._keyframes[0].nbytes
        self._keyframes = self._keyframes[1:]
        for kf in self._keyframes:
            kf.index -= k
        self._kf_index = [i - k for i in self._kf_index[1:]]
        kept = [(i - k, t) for i, t in self._tab_snaps if i >= k]
        self._tab_snap_total -= sum(sys.getsizeof(t) for i, t in self._tab_snaps if i < k)
        self._tab_snaps = kept
        self._cursor = None
        self.first_step += k
        self._n -= k

    # ---- reading ----------------------------------------------------------------------
    def _index(self, step: int) -> int:
        if not self._n:
            raise IndexError("the history is empty")
        if not self.first_step <= step <= self.last_step:
            raise IndexError(f"step {step} is outside the history ({self.first_step}..{self.last_step})")
        return step - self.first_step

    def _span(self, idx: str, a: int, b: int) -> tuple[int, int]:
        """Entries [lo, hi) of stream `idx` written by the steps of index a+1 .. b."""
        off, n = self._off[idx], self._cols[idx].n
        lo = int(off.a[a + 1]) if a + 1 < self._n else n
        hi = int(off.a[b + 1]) if b + 1 < self._n else n
        return lo, hi

    def _entries(self, a: int, b: int) -> int:
        return sum(hi - lo for lo, hi in (self._span(idx, a, b) for idx, _ in _STREAMS))

    def state_at(self, step: int) -> PastStep:
        """The state after `step`: from the keyframe before it, or from the step last
        answered when fewer entries lie between (a scrub: forward or backward)."""
        i = self._index(step)
        kf = self._keyframes[bisect.bisect_right(self._kf_index, i) - 1]
        base_i, base, backward = kf.index, kf.arrays, False
        cur = self._cursor
        if cur is not None:
            lo, hi = sorted((cur[0], i))
            if self._entries(lo, hi) < self._entries(kf.index, i):
                base_i, base, backward = cur[0], cur[1], i < cur[0]
        arrays = tuple(a.copy() for a in base)
        targets = dict(zip(_STATE, arrays))
        self.last_replayed = 0          # entries applied for this answer (its cost)
        touched = []                    # the blocks written (from the last answer: all that changed)
        for idx, values in _STREAMS:
            lo, hi = self._span(idx, *((i, base_i) if backward else (base_i, i)))
            if hi <= lo:
                continue
            ids = self._cols[idx].view(lo, hi)
            self.last_replayed += hi - lo
            if backward:   # each block's value before its first entry after step i
                uniq, first = np.unique(ids, return_index=True)
                pos, names = lo + first, [f"old_{v}" for v in values]
            else:          # the last write of each block wins: unique over the reversed entries
                uniq, first = np.unique(ids[::-1], return_index=True)
                pos, names = lo + (hi - lo - 1 - first), values
            touched.append(uniq)
            for target, name in zip(values, names):
                targets[target][uniq] = self._cols[name].a[pos]
        since = changed = None
        if cur is not None and base is cur[1]:     # the blocks its entries wrote, each once
            since, changed = cur[3], np.unique(np.concatenate([np.zeros(0, np.int64), *touched]))
        elif cur is not None:                      # from a keyframe: compared if asked
            since, changed = cur[3], functools.partial(_changed_blocks, cur[1], arrays)
        tables = self._tables_at(i)
        serial = next(_SERIALS)
        self._cursor = (i, arrays, tables, serial)
        ref, owner, flags, tokens = arrays
        pool = PoolState(self.block_size, ref, owner, tokens.astype(np.int32), (flags & CACHED) > 0,
                         (flags & EVICTABLE) > 0)
        return PastStep(self.first_step + i, float(self._clock.a[i]), pool, tables, self._step_events(i),
                        serial, since, changed)

    def _tables_at(self, i: int) -> dict[int, tuple[int, ...]]:
        """The running block tables after step index i: the nearest copy at or before i
        (a table copy, a keyframe's, or the last answer's), then the changes up to i."""
        kf = self._keyframes[bisect.bisect_right(self._kf_index, i) - 1]
        base_i, base = kf.index, kf.tables
        j = bisect.bisect_right(self._tab_snaps, i, key=lambda t: t[0]) - 1
        if j >= 0 and self._tab_snaps[j][0] > base_i:
            base_i, base = self._tab_snaps[j]
        cur = self._cursor
        if cur is not None and base_i <= cur[0] <= i:
            base_i, base = cur[0], cur[2]
        tables = dict(base)
        t_lo = self._tab_off[base_i + 1] if base_i + 1 < self._n else len(self._tab)
        t_hi = self._tab_off[i + 1] if i + 1 < self._n else len(self._tab)
        _apply_tables(tables, self._tab[t_lo:t_hi])
        return tables

    def _step_events(self, i: int) -> tuple[Event, ...]:
        blob = self._events[i]
        return pickle.loads(blob) if blob else ()

    def clock_at(self, step: int) -> float:
        return float(self._clock.a[self._index(step)])

    def events(self, first: int, last: int) -> list[tuple[int, Event]]:
        """(step, event) for the steps first..last held (clipped to the history)."""
        lo = max(first, self.first_step) - self.first_step
        hi = min(last, self.last_step) - self.first_step
        return [(self.first_step + i, e) for i in range(lo, hi + 1) for e in self._step_events(i)]

    def first_steps(self, kinds: Iterable[str]) -> dict[str, int]:
        """The first held step with an event of each kind (kinds never seen are absent)."""
        want, out = set(kinds), {}
        for i in range(self._n):
            evs = self._step_events(i)
            for e in evs:
                if e.kind in want and e.kind not in out:
                    out[e.kind] = self.first_step + i
            if len(out) == len(want):
                break
        return out

    def nbytes(self) -> int:
        """What the history holds: columns (allocated), keyframes, table changes (CPython
        object sizes) and the pickled events; what `max_bytes` bounds."""
        cols = (sum(c.nbytes for c in self._cols.values()) + self._clock.nbytes
                + sum(o.nbytes for o in self._off.values()))
        return cols + self._kf_total + self._obj_total + self._tab_snap_total


def _object_bytes(d: StepDelta, events_blob: bytes) -> int:
    """What a step's table changes hold as Python objects (CPython sizes: a change is a
    3-tuple, a tuple of ids and two ints; every block id an int of 28 bytes and a
    pointer), its pickled events, and the step's list slots."""
    ids = sum(len(t[2]) for t in d.tables)
    return 120 + 200 * len(d.tables) + 36 * ids + len(events_blob) + 33


def _apply_tables(tables: dict[int, tuple[int, ...]], changes: Iterable[TableChange]) -> None:
    for seq, keep, added in changes:
        if keep < 0:
            tables.pop(seq, None)
        else:
            tables[seq] = tables.get(seq, ())[:keep] + added
