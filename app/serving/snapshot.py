"""What the GUI thread reads: one immutable-by-convention bundle of numpy copies,
built in the engine's worker thread so the GUI never touches live engine state.

`SnapshotBuilder` folds StepRecords as they come (cheap appends) and assembles a
`Snapshot` only when the GUI has taken the previous one, so a fast engine and a
60 Hz view do not multiply each other's work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tinyserve_core.kv.stats import BlocksSnapshot
from tinyserve_core.observe import events as ev
from tinyserve_core.observe.history import DeltaRecorder, StepDelta
from tinyserve_core.observe.record import StepRecord

from .pool_image import PoolEvents
from .selection_data import SelectionHistory, SelectionView

METRIC_COLUMNS = (
    "clock", "step", "kv_cache_usage_perc", "tokens_per_s", "gen_tokens_per_s",
    "num_requests_running", "num_requests_waiting", "num_preemptions",
    "prefix_hit_rate", "memory_waste", "num_cow_copies", "step_time_s",
    "num_shared_blocks", "num_cached_free_blocks",
)
COL = {name: i for i, name in enumerate(METRIC_COLUMNS)}


@dataclass
class PoolArrays:
    ref_cnt: np.ndarray      # int32 [N]
    owner: np.ndarray        # int64 [N], -1 = none
    fill: np.ndarray         # float32 [N], 0..1: tokens / block_size
    evictable: np.ndarray    # bool [N]: free but still hashed (prefix-cache reusable)
    hashed: np.ndarray       # bool [N]


def pool_arrays(snap: BlocksSnapshot) -> PoolArrays:
    """The views' arrays from BlockManager.blocks_snapshot(). Fill is turned from tokens
    into a fraction here, once: the snapshot's unit is always tokens."""
    fill = snap.num_tokens.astype(np.float32) / np.float32(snap.block_size)
    return PoolArrays(snap.ref_cnt.astype(np.int32, copy=False), snap.owner.astype(np.int64, copy=False),
                      fill, snap.evictable.astype(bool, copy=False), snap.is_cached.astype(bool, copy=False))


def pool_event_lists(events) -> tuple[list[int], list[int], list[int], list[int], list[tuple[int, int]]]:
    """What the pool view animates, from one step's events: allocated, released,
    preempted (the blocks a preemption released), evicted blocks and CoW (src, dst)."""
    alloc, released, preempted, evict, cow = [], [], [], [], []
    preempted_seqs = set()
    for e in events:
        match e:
            case ev.Alloc():
                alloc.extend(e.block_ids)
            case ev.Free():
                released.extend(e.released)
            case ev.CowCopy():
                cow.append((e.src, e.dst))
            case ev.Evict():
                evict.append(e.block_id)
            case ev.Preempt():
                preempted_seqs.add(e.seq_id)
    if preempted_seqs:
        for e in events:
            if isinstance(e, ev.Free) and e.seq_id in preempted_seqs:
                preempted.extend(e.released)
    return alloc, released, preempted, evict, cow


def pool_events(alloc, released, preempted, evict, cow) -> PoolEvents:
    as_ids = lambda xs: np.array(xs, np.int64) if xs else np.zeros(0, np.int64)
    return PoolEvents(as_ids(alloc), as_ids(released), as_ids(preempted), as_ids(evict),
                      np.array(cow, np.int64).reshape(-1, 2))


@dataclass
class Snapshot:
    step: int
    clock: float
    progress: float
    state: str                                  # "running" | "paused" | "done" | "loading"
    num_blocks: int
    block_size: int
    pool: PoolArrays
    pool_events: PoolEvents
    tables: dict[int, Sequence[int]]            # running seq id -> physical block ids (array or tuple)
    metrics: np.ndarray                         # [k, len(METRIC_COLUMNS)] rows since last take
    latencies: np.ndarray                       # [k, 3] (clock, ttft_s, tpot_s) finished since last take
    op_timings: list[tuple[float, dict[str, float], dict[str, int]]]  # (clock, op -> s, op -> bytes)
    selection: SelectionView | None
    selection_keys: dict[int, str]              # seq id -> request id, for the chooser
    summary: dict = field(default_factory=dict)
    engine_config: dict = field(default_factory=dict)   # what the engine runs with now
    generation: int = 0                                 # engines built so far (restarts)
    history: list[StepDelta] = field(default_factory=list)  # every step since the last take
    # a time-travel step only: (serial of the history's answer before, this answer's
    # serial, ids of the blocks whose state may differ from it; both None for a first
    # answer): a view that drew that answer redraws only those blocks
    changes: tuple[int | None, int, np.ndarray | None] | None = None


class SnapshotBuilder:
    """Lives in the worker thread; owns everything accumulated between GUI pulls."""

    def __init__(self, selection_capacity: int = 128):
        self.selection = SelectionHistory(capacity=selection_capacity)
        self._reset_pending()
        self._hits_q = (0, 0)
        self.recorder = DeltaRecorder()

    def _reset_pending(self):
        self._alloc: list[int] = []
        self._released: list[int] = []
        self._preempted: list[int] = []
        self._evict: list[int] = []
        self._cow: list[tuple[int, int]] = []
        self._metrics: list[tuple] = []
        self._lat: list[tuple[float, float, float]] = []
        self._ops: list[tuple[float, dict[str, float]]] = []
        self._deltas: list[StepDelta] = []

    def record_state(self, engine, rec: StepRecord) -> None:
        """The step's delta for time travel: the engine's state right after `rec`."""
        running = engine.scheduler.running
        self._deltas.append(self.recorder.record(
            rec.step, rec.t_end, engine.block_manager.blocks_snapshot(), engine.running_tables(),
            rec.events, {s.seq_id: s.request.request_id for s in running}))

    def ingest(self, rec: StepRecord) -> None:
        alloc, released, preempted, evict, cow = pool_event_lists(rec.events)
        self._alloc.extend(alloc)
        self._released.extend(released)
        self._preempted.extend(preempted)
        self._evict.extend(evict)
        self._cow.extend(cow)
        self.selection.ingest(rec)
        m = rec.metrics
        q, h = m.prefix_cache_queries, m.prefix_cache_hits
        dq, dh = q - self._hits_q[0], h - self._hits_q[1]
        self._hits_q = (q, h)
        # per-step hit rate of the tokens queried this step; NaN when nothing asked
        hit_rate = dh / dq if dq > 0 else float("nan")
        self._metrics.append((
            rec.t_end, rec.step, m.kv_cache_usage_perc, m.tokens_per_s, m.gen_tokens_per_s,
            m.num_requests_running, m.num_requests_waiting, m.num_preemptions,
            hit_rate, m.memory_waste, m.num_cow_copies, m.step_time_s,
            m.num_shared_blocks, m.num_cached_free_blocks,
        ))
        for t in rec.finished:
            ttft = t.ttft_s
            tpot = t.tpot_s
            self._lat.append((rec.t_end, np.nan if ttft is None else ttft,
                              np.nan if tpot is None else tpot))
        if rec.op_timings_s:
            self._ops.append((rec.t_end, dict(rec.op_timings_s), dict(rec.op_bytes)))

    def take_metrics(self) -> tuple[np.ndarray, np.ndarray]:
        """(metric rows, latency rows) ingested since the last take, for a view fed
        without an engine (the Attach tab's scraped metrics)."""
        rows = (np.array(self._metrics, np.float64) if self._metrics
                else np.zeros((0, len(METRIC_COLUMNS))))
        lat = np.array(self._lat, np.float64).reshape(-1, 3)
        self._metrics, self._lat = [], []
        return rows, lat

    def build(self, engine, *, step: int, clock: float, progress: float, state: str,
              selection_key: tuple[int, int, int] | None, summary: dict) -> Snapshot:
        blocks = engine.block_manager.blocks_snapshot()
        bs = blocks.block_size
        pool = pool_arrays(blocks)
        tables = {int(s): np.array(t, np.int64) for s, t in engine.running_tables().items()}
        pev = pool_events(self._alloc, self._released, self._preempted, self._evict, self._cow)
        metrics = (np.array(self._metrics, np.float64) if self._metrics
                   else np.zeros((0, len(METRIC_COLUMNS))))
        lat = np.array(self._lat, np.float64).reshape(-1, 3)
        snap = Snapshot(
            step=step, clock=clock, progress=progress, state=state,
            num_blocks=int(pool.ref_cnt.shape[0]), block_size=bs, pool=pool,
            pool_events=pev, tables=tables, metrics=metrics, latencies=lat,
            op_timings=self._ops, selection=self.selection.view(selection_key),
            selection_keys=self.selection.sequences(), summary=summary, history=self._deltas,
        )
        self._reset_pending()
        return snap
