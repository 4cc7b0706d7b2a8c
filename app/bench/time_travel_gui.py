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
* scrub frame: one frame of a timeline drag in the app's own window at 1920x1080 with
  every view time travel moves on screen (pool, block tables, selection heatmap,
  metrics): from the slider move to the last paint, counted per view. The event log
  catches up once the drag rests (event_log.SCRUB_MS), so it is timed apart: "time
  travel event log refresh"."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import time
import tracemalloc

import numpy as np
from PySide6.QtCore import QEvent, QObject

from .report import time_stats

SCRUB_WINDOW = (1920, 1080)
ENGINE_STEPS = 24     # engine steps before the scrub: metric curves and heatmap columns


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


class _Paints(QObject):
    """Counts the paint events of the widgets it filters: proof that a frame's time
    includes each visible view's paint, not only its data update."""

    def __init__(self):
        super().__init__()
        self.n: dict[str, int] = {}

    def watch(self, name: str, widget) -> None:
        widget.setProperty("bench_name", name)
        widget.installEventFilter(self)
        self.n[name] = 0

    def eventFilter(self, obj, ev):
        if ev.type() == QEvent.Type.Paint:
            name = obj.property("bench_name")
            self.n[name] = self.n.get(name, 0) + 1
        return False


def scrub_window(app, config, size: tuple[int, int] = SCRUB_WINDOW):
    """The app's own window (Serving tab, engine in its process, paused), with the
    block tables dock opened beside the metrics: every view time travel moves is on
    screen. A few engine steps give the metrics and the selection heatmap something."""
    import tempfile
    from PySide6.QtCore import QSettings, Qt
    from app.main_window import MainWindow
    from tinyserve_core.engine.config import EngineConfig
    settings = QSettings(os.path.join(tempfile.mkdtemp(), "bench.ini"), QSettings.Format.IniFormat)
    # a sparse policy with statistics: the selection heatmap has columns to cut at the step
    config = EngineConfig.from_dict({"policy": "quest", "stats": True}, base=config)
    win = MainWindow(config, settings=settings, restore_layout=False, extra_tabs=False)
    tab = win.serving
    tab.show_error_dialogs = False
    tab.timer.stop()                 # frames are driven here, at the timer's pace
    win.resize(*size)
    win.show()
    _wait(app, lambda: tab.worker.state in ("paused", "error"), 300)
    if tab.worker.state != "paused":
        err = tab.last_error[0] if tab.last_error else "engine did not start"
        win.close()
        raise RuntimeError(err)
    tab.worker.step_n(ENGINE_STEPS)

    def pulled():
        tab.frame()
        s = getattr(tab, "last_snapshot", None)
        return s is not None and s.step >= ENGINE_STEPS
    _wait(app, pulled, 120)
    tab.render_all()
    tables = tab.docks["Block tables"]       # out of its tab group, beside the metrics
    tab.removeDockWidget(tables)
    # (splitDockWidget would add it to the metrics' tab group again)
    tab.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, tables, Qt.Orientation.Horizontal)
    tables.show()
    tab.docks["Metrics"].raise_()
    _wait(app, lambda: False, 0.3)
    return win


def _wait(app, pred, seconds: float) -> None:
    t0 = time.perf_counter()
    while not pred() and time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.005)


def scrub_row(hist, frames: int, app, win) -> dict:
    """Drag frames in the app's window: each one moves the timeline a few steps on (a
    drag skips steps) as a drag does (the slider's value: time travel shows that step in
    the pool, block tables, selection heatmap, metric cursors, header), runs the tab's
    frame (the pool's render, a plot's turn) and lets Qt paint what changed. Frames come
    at the tab's frame period (FRAME_MS), as the frame timer would run them; the time
    measured is from the slider move to the last paint."""
    from app.serving.tab import FRAME_MS
    tab = win.serving
    tt = tab.time_travel
    tt.history = hist
    tt._generation = tab.last_snapshot.generation
    tt.log.set_history(hist)
    tt.timeline.set_range(hist.first_step, hist.last_step)
    paints = _Paints()
    views = {"pool": [tab.pool_view.glw], "block tables": [tab.tables_view.glw],
             "metrics": tab.metrics_view.widgets, "selection": [tab.selection_view.glw]}
    for name, ws in views.items():
        if not any(w.isVisible() for w in ws):
            raise RuntimeError(f"bench window: the {name} view is not on screen")
        for w in ws:
            paints.watch(name, w.viewport())
    stride = max(1, min(40, (hist.last_step - hist.first_step) // (frames + 5)))
    step = hist.last_step - stride * (frames + 5)
    # the metric rows are the engine's own, re-timed onto the scrubbed stretch of the
    # history's clock: the cursor moves inside the plotted window, as in one run
    mv = tab.metrics_view
    from app.serving.snapshot import COL
    c0, c1 = hist.clock_at(step), hist.clock_at(hist.last_step)
    mv.rows[:, COL["clock"]] = np.linspace(c0, c1, mv.rows.shape[0])
    mv.lat = mv.lat[:0]
    mv.set_cursor(None)
    mv.render()
    tt.timeline.seek(step)
    app.processEvents()
    ms, cpu, painted = [], [], dict.fromkeys(views, 0)
    for i in range(frames + 5):
        step += stride
        before = dict(paints.n)
        t, c = time.perf_counter(), time.thread_time()
        tt.timeline.slider.setValue(step)
        tab.frame()
        app.processEvents()
        took = time.perf_counter() - t
        if i >= 5:
            ms.append(took * 1000)
            cpu.append((time.thread_time() - c) * 1000)
            for name in views:
                painted[name] += paints.n[name] > before[name]
        time.sleep(max(0.0, FRAME_MS / 1000 - took))
    if tab.pool_view.past_step != step:
        raise RuntimeError("bench window: the pool does not show the step dragged to")
    tt.timeline.go_live()
    return {"case": f"time travel scrub frame, {hist.num_blocks:,} blocks", "blocks": hist.num_blocks,
            "window": f"{win.width()}x{win.height()}", "stride_steps": stride,
            "frames_painted": painted, **time_stats(ms, "frames"),
            # the GUI thread's own CPU time per frame: what a loaded machine's waits leave out
            "cpu_median_ms": float(np.median(cpu)), "cpu_p95_ms": float(np.percentile(cpu, 95))}


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
                     frames: int, config) -> list[dict]:
    deltas = record_run(num_blocks, record_steps)
    mem = memory_row(deltas, num_blocks)
    hist = long_history(deltas, num_blocks, history_steps)
    rows = [jump_row(hist, max(frames, 50))]
    win = None
    try:
        win = scrub_window(app, config)
        rows.append(scrub_row(hist, frames, app, win))
    except RuntimeError as e:        # a row not measured fails the bench (exit 1)
        rows.append({"case": f"time travel scrub frame, {num_blocks:,} blocks", "error": str(e)})
    finally:
        if win is not None:
            win.serving.shutdown()
            win.close()
    return rows + [log_row(hist, frames, app), mem]
