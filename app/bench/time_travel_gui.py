"""The time-travel rows of `tinyserve bench gui`: what a history costs at 32K blocks.

The history is recorded from a real block manager: the model-free serving loop of
`tinyserve bench kv` (kv.memory_sim, 128 running sequences, ShareGPT-like lengths, a
shared prefix) with the engine's own DeltaRecorder after every step, exactly as the GUI's
engine host records it.

* memory per 10k steps: what the history allocates and keeps for `record_steps` steps
  (tracemalloc; each delta unpickled as it arrives from the engine process, ingested and
  dropped, as in the GUI), scaled;
* jump: `History.state_at` at random steps of a `history_steps`-step history. A run that
  long takes hours on a CPU loop, so the recorded steps are ingested again and again,
  renumbered, until the history has `history_steps` steps: every stretch is a real
  stretch of the run, and a jump's cost depends on the entries since its keyframe, not on
  what the blocks mean;
* scrub frame: one timeline frame of a drag: jump, then the pool view and block tables
  show that step, painted (synchronous repaint). The event log catches up once the drag
  rests (event_log.SCRUB_MS), so it is timed apart: "time travel event log refresh"."""

from __future__ import annotations

import dataclasses
import gc
import pickle
import time
import tracemalloc

import numpy as np

from .report import time_stats


def record_run(num_blocks: int, steps: int) -> list:
    """StepDeltas of the first `steps` steps of a memory-only serving run."""
    from tinyserve_core.kv.memory_sim import run_memory_workload
    from tinyserve_core.observe.events import EventSink
    from tinyserve_core.observe.history import DeltaRecorder

    sink, rec, out = EventSink(), DeltaRecorder(), []

    class _Enough(Exception):
        pass

    def on_step(step, bm, running):
        out.append(rec.record(step, step * 0.02, bm.blocks_snapshot(),
                              {r: bm.block_table(r) for r in running}, sink.drain(),
                              {r: f"req-{r}" for r in running}))
        if len(out) >= steps:
            raise _Enough
    try:
        # enough requests to outlast `steps` (each holds a sequence for ~340 steps of 128)
        run_memory_workload(num_requests=max(300, steps), num_blocks=num_blocks, max_num_seqs=128,
                            shared_prefix_len=64, sink=sink, on_step=on_step)
    except _Enough:
        pass
    return out


def memory_row(deltas: list, num_blocks: int) -> dict:
    """What the GUI's history holds for these steps: each delta arrives pickled (the pipe
    from the engine process), is ingested and dropped, as in the GUI."""
    from tinyserve_core.observe.history import History
    blobs = [pickle.dumps(d) for d in deltas]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    hist = History(num_blocks, 16)
    for b in blobs:
        hist.ingest(pickle.loads(b))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    steps = len(deltas)
    return {"case": f"time travel memory, {num_blocks:,} blocks", "blocks": num_blocks,
            "steps": steps, "mb_per_10k_steps": held / 1e6 * 10_000 / steps,
            "history_estimate_mb_per_10k_steps": hist.nbytes() / 1e6 * 10_000 / steps}


def long_history(deltas: list, num_blocks: int, steps: int):
    from tinyserve_core.observe.history import History
    hist = History(num_blocks, 16, max_bytes=1 << 40)
    n = 0
    while n < steps:
        for d in deltas[: steps - n]:
            n += 1
            hist.ingest(dataclasses.replace(d, step=n))
    return hist


def jump_row(hist, jumps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ms = []
    for s in rng.integers(hist.first_step, hist.last_step + 1, jumps):
        t = time.perf_counter()
        hist.state_at(int(s))
        ms.append((time.perf_counter() - t) * 1000)
    return {"case": f"time travel jump, {hist.num_blocks:,} blocks, {len(hist):,} steps",
            "blocks": hist.num_blocks, "steps": len(hist), **time_stats(ms, "jumps")}


def scrub_row(hist, frames: int, app) -> dict:
    """Drag frames: each one shows a step further along (a drag skips steps)."""
    from app.serving.pool_view import BlockPoolView
    from app.serving.tables_view import BlockTablesView
    from app.serving.time_travel import past_snapshot
    pool, tables = BlockPoolView(), BlockTablesView()
    for w in (pool, tables):
        w.resize(900, 600)
        w.show()
    app.processEvents()
    ms = []
    stride = max(1, min(40, (hist.last_step - hist.first_step) // (frames + 5)))
    step = hist.last_step - stride * (frames + 5)
    for i in range(frames + 5):
        step += stride
        t = time.perf_counter()
        snap = past_snapshot(hist.state_at(step))
        pool.apply_snapshot(snap, t)
        pool.render(t)
        tables.apply_snapshot(snap)
        for w in (pool.glw.viewport(), tables.glw.viewport()):
            w.repaint()
        if i >= 5:
            ms.append((time.perf_counter() - t) * 1000)
        app.processEvents()
    for w in (pool, tables):
        w.close()
    return {"case": f"time travel scrub frame, {hist.num_blocks:,} blocks", "blocks": hist.num_blocks,
            **time_stats(ms, "frames")}


def log_row(hist, frames: int, app) -> dict:
    """The event log rebuilt at a step (its newest MAX_ROWS entries up to it), painted."""
    from app.serving.event_log import EventLogView
    log = EventLogView()
    log.resize(900, 400)
    log.show()
    log.set_history(hist)
    app.processEvents()
    ms = []
    for i, step in enumerate(np.linspace(hist.first_step, hist.last_step, frames + 5).astype(int)):
        t = time.perf_counter()
        log.cursor = int(step)
        log.refresh()
        log.list.viewport().repaint()
        if i >= 5:
            ms.append((time.perf_counter() - t) * 1000)
        app.processEvents()
    log.close()
    return {"case": "time travel event log refresh", "rows": len(log.entries), **time_stats(ms, "frames")}


def time_travel_rows(app, num_blocks: int, record_steps: int, history_steps: int,
                     frames: int) -> list[dict]:
    deltas = record_run(num_blocks, record_steps)
    mem = memory_row(deltas, num_blocks)
    hist = long_history(deltas, num_blocks, history_steps)
    return [jump_row(hist, max(frames, 50)), scrub_row(hist, frames, app), log_row(hist, frames, app), mem]
