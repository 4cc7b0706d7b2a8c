"""`tinyserve bench gui`: what the GUI costs per frame, and whether it ever freezes.

* Block-pool frame time, snapshot to painted frame (apply the snapshot, compute the
  animated index image, setImage, synchronous repaint of the view), at 4K, 32K and
  128K blocks, on a pool that churns like a busy engine (hundreds of allocs/frees,
  CoW copies, evictions and preemptions per frame).
* Heatmap frame time: the cache-selection view at 256 pages x 128 decode steps (the
  most it shows).
* Longest event-loop stall while the real engine runs in its worker thread and the
  Serving tab draws at its normal rate: the largest gap between ticks of a 5 ms timer.

Registered lazily by tinyserve_core.cli.bench (by module name: the core never
imports app). Imports Qt only when run, so `tinyserve --help` stays fast. Runs on the offscreen
platform when there is no display (pass --platform xcb under Xvfb to include X)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .report import check_json, machine, offscreen_without_display, time_stats, write_json

TARGET_FRAME_MS = 16.0
TARGET_STALL_MS = 50.0
TARGET_JUMP_MS = 50.0
TIME_TRAVEL_BLOCKS = 32768


def add_parser(sub):
    p = sub.add_parser("gui", help="GUI frame times and event-loop stalls")
    p.add_argument("--blocks", default="4096,32768,131072", help="pool sizes to time (comma separated)")
    p.add_argument("--frames", type=int, default=60, help="frames per case")
    p.add_argument("--engine-seconds", type=float, default=8.0,
                   help="how long to run the engine for the stall measurement (0 = skip)")
    p.add_argument("--model", default=None, help="model folder for the stall run (None: the shipped model)")
    p.add_argument("--config", default=None, help="session config JSON for the stall run")
    p.add_argument("--compare-thread", action="store_true",
                   help="also measure the stall with the engine in a thread of the GUI process (the peer)")
    p.add_argument("--history-steps", type=int, default=100_000,
                   help="time travel: steps in the history the jumps are timed on (0 = skip the rows)")
    p.add_argument("--record-steps", type=int, default=2000,
                   help="time travel: steps recorded from a 32K-block serving loop (memory per 10k steps)")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run)
    return p


def _stats(ms: list[float]) -> dict:
    return time_stats(ms, "frames")


class _ChurningPool:
    """A pool that changes like a busy engine's: requests grab runs of blocks, grow,
    fork (shared blocks), finish (cached-free), get preempted."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.ref = np.zeros(n, np.int32)
        self.owner = np.full(n, -1, np.int64)
        self.fill = np.zeros(n, np.float32)
        self.cached = np.zeros(n, bool)
        self.next_seq = 0
        self.per_frame = max(64, n // 256)      # blocks touched per frame

    def snapshot(self, step: int):
        from app.serving.pool_image import PoolEvents
        from app.serving.snapshot import PoolArrays, Snapshot, METRIC_COLUMNS
        r, k = self.rng, self.per_frame
        free = np.flatnonzero(self.ref == 0)
        alloc = r.choice(free, size=min(k, free.size), replace=False) if free.size else free
        self.ref[alloc] = 1
        self.owner[alloc] = self.next_seq + np.arange(alloc.size) // 16
        self.next_seq += max(1, alloc.size // 16)
        self.fill[alloc] = r.random(alloc.size).astype(np.float32)
        used = np.flatnonzero(self.ref > 0)
        # release a little less than is allocated until the pool is ~70% used
        target = k if (self.ref > 0).mean() > 0.7 else k // 2
        rel = r.choice(used, size=min(target, used.size), replace=False) if used.size else used
        self.ref[rel] = 0
        self.cached[rel] = r.random(rel.size) < 0.5
        live = np.flatnonzero(self.ref > 0)
        if live.size:
            self.ref[r.choice(live, size=k // 8)] += 1
        evict = r.choice(np.flatnonzero(self.cached), size=min(k // 16, int(self.cached.sum())), replace=False)
        self.cached[evict] = False
        cow = r.integers(0, self.n, (4, 2))
        ev = PoolEvents(alloc, rel, rel[: k // 16], evict, cow)
        pool = PoolArrays(self.ref.copy(), self.owner.copy(), self.fill.copy(),
                          self.cached & (self.ref == 0), self.cached.copy())
        return Snapshot(step, step * 0.05, 0.5, "running", self.n, 16, pool, ev, {},
                        np.zeros((0, len(METRIC_COLUMNS))), np.zeros((0, 3)), [], None, {})


def bench_pool(n: int, frames: int, app) -> dict:
    from app.serving.pool_view import BlockPoolView
    v = BlockPoolView()
    v.resize(1280, 800)
    v.show()
    app.processEvents()
    pool = _ChurningPool(n)
    ms = []
    for i in range(frames + 5):
        snap = pool.snapshot(i)
        t = time.perf_counter()
        v.apply_snapshot(snap, t)
        v.render(t)
        v.glw.viewport().repaint()
        dt = (time.perf_counter() - t) * 1000
        if i >= 5:                       # first frames pay for allocations
            ms.append(dt)
        app.processEvents()
    v.close()
    return {"case": f"block pool {n:,} blocks", "blocks": n, **_stats(ms)}


def bench_heatmap(frames: int, app, pages: int = 256, steps: int = 128) -> dict:
    from app.serving.selection_data import SelectionView
    from app.serving.selection_view import SelectionViewWidget
    w = SelectionViewWidget()
    w.resize(900, 700)
    w.show()
    app.processEvents()
    rng = np.random.default_rng(0)
    ms = []
    for i in range(frames + 5):
        scores = rng.standard_normal((pages, steps)).astype(np.float32)
        sel = rng.random((pages, steps)) < 0.1
        orc = rng.random((pages, steps)) < 0.1
        T = 512
        view = SelectionView((1, 0, 0), "quest", np.arange(steps) + i, scores, sel, orc, True,
                             np.full(steps, pages), [0, 1], [0, 1], np.arange(T),
                             rng.random((T, 2)).astype(np.float32), rng.random((T, 2)).astype(np.float32),
                             rng.random(T).astype(np.float32), [0, 1])

        class _S:
            selection = view
            selection_keys = {1: "seq 1"}
        t = time.perf_counter()
        w.apply_snapshot(_S)
        w.render_heatmap()
        w.glw.viewport().repaint()
        dt = (time.perf_counter() - t) * 1000
        if i >= 5:
            ms.append(dt)
        app.processEvents()
    w.close()
    return {"case": f"selection heatmap {pages} pages x {steps} steps", **_stats(ms)}


def bench_stall(seconds: float, app, config, mode: str = "process") -> dict:
    from PySide6.QtCore import QSettings, QTimer
    import tempfile
    from app.main_window import MainWindow
    settings = QSettings(os.path.join(tempfile.mkdtemp(), "bench.ini"), QSettings.Format.IniFormat)
    win = MainWindow(config, settings=settings, restore_layout=False, engine_mode=mode,
                     extra_tabs=False)
    win.serving.show_error_dialogs = False
    win.resize(1600, 1000)
    win.show()
    worker = win.serving.worker
    t_load = time.perf_counter()
    while worker.state not in ("paused", "error"):
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - t_load > 300:
            break
    if worker.state != "paused":
        err = win.serving.last_error[0] if win.serving.last_error else "engine did not start"
        win.close()
        return {"case": f"event-loop stall, engine in a {mode}", "error": err}
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000)
        last[0] = now
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(tick)

    def measure(secs: float) -> tuple[np.ndarray, float]:
        gaps.clear()
        probe.start()
        last[0] = t0 = time.perf_counter()
        while time.perf_counter() - t0 < secs and worker.state not in ("done", "error"):
            app.processEvents()
            time.sleep(0.001)
        probe.stop()
        return np.asarray(gaps[1:] or [0.0]), time.perf_counter() - t0

    # the peer: the same window and timer with the engine paused, so the machine's own
    # noise (other processes on a shared CPU) is measured side by side
    idle, _ = measure(min(seconds, 5.0))
    frames0 = win.serving.pool_view.frames
    worker.start_engine()
    g, elapsed = measure(seconds)
    steps = worker.steps_done
    frames = win.serving.pool_view.frames - frames0
    win.close()
    return {"case": f"event-loop stall, engine in a {mode}", "engine_mode": mode,
            "longest_stall_ms": float(g.max()), "p99_gap_ms": float(np.percentile(g, 99)),
            "idle_longest_stall_ms": float(idle.max()), "idle_p99_gap_ms": float(np.percentile(idle, 99)),
            "engine_steps": int(steps), "engine_steps_per_s": steps / elapsed,
            "pool_frames_per_s": frames / elapsed, "seconds": elapsed,
            "num_blocks": config.cache.num_blocks, "engine_state": worker.state,
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def run(args) -> int:
    check_json(args.json)
    offscreen_without_display()
    try:
        sizes = [int(x) for x in str(args.blocks).split(",") if x.strip()]
    except ValueError:
        print(f"tinyserve bench gui: --blocks: expected comma-separated integers, got {args.blocks!r}",
              file=sys.stderr)
        return 2
    if args.history_steps < 0 or args.record_steps < 1:
        print("tinyserve bench gui: --history-steps must be >= 0 and --record-steps >= 1", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1 or args.frames < 1:
        print("tinyserve bench gui: --blocks and --frames must be positive", file=sys.stderr)
        return 2
    from tqdm import tqdm
    from PySide6.QtWidgets import QApplication

    from tinyserve_core.engine.config import EngineConfig
    cfg = EngineConfig.load(args.config) if args.config else EngineConfig.from_dict(dict(
        num_blocks=4096, block_size=16, rate=8.0, requests=64, prompt_len=128, prompt_len_max=384,
        output_len=48, output_len_max=128, n=2, shared_prefix_frac=0.5))
    if args.model:
        cfg = EngineConfig.from_dict({"model": args.model}, base=cfg)
    if args.engine_seconds > 0 or args.history_steps > 0:
        # the stall case and the time-travel window start the engine in a child process,
        # where a bad model folder would only show as a row that was not measured: load
        # it here first, so it is one line and exit 2 (TinyServeError, printed by the CLI)
        from tinyserve_core.model.loader import default_model_dir, load_model
        load_model(cfg.model.model or default_model_dir(), device="cpu")

    app = QApplication.instance() or QApplication(["tinyserve-bench-gui"])
    rows = []
    cases = [("pool", n) for n in sizes] + [("heatmap", None)]
    if args.history_steps > 0:
        cases.append(("time travel", None))
    if args.engine_seconds > 0:
        cases.append(("stall", "process"))
        if args.compare_thread:
            cases.append(("stall", "thread"))
    for kind, n in tqdm(cases, desc="bench gui", unit="case", file=sys.stderr):
        if kind == "pool":
            rows.append(bench_pool(n, args.frames, app))
        elif kind == "heatmap":
            rows.append(bench_heatmap(args.frames, app))
        elif kind == "time travel":
            from .time_travel_gui import time_travel_rows
            rows.extend(time_travel_rows(app, TIME_TRAVEL_BLOCKS, args.record_steps,
                                         args.history_steps, args.frames, cfg))
        else:
            rows.append(bench_stall(args.engine_seconds, app, cfg, n))

    platform_name = app.platformName()
    print(f"\nGUI benchmark on {machine()}, Qt platform '{platform_name}'")
    print(f"{'case':<44} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}  target")
    for r in rows:
        if "mb_per_10k_steps" in r:
            print(f"{r['case']:<44} {r['mb_per_10k_steps']:>10.1f} MB per 10k steps "
                  f"(recorded over {r['steps']:,} steps)")
        elif "jumps" in r:
            ok = "ok" if r["p95_ms"] <= TARGET_JUMP_MS else "MISSED"
            print(f"{r['case']:<44} {r['median_ms']:>10.2f} {r['p95_ms']:>8.2f} {r['max_ms']:>8.2f}  "
                  f"p95 <= {TARGET_JUMP_MS:g} ms/jump {ok}")
        elif "median_ms" in r:
            ok = "ok" if r["median_ms"] <= TARGET_FRAME_MS else "MISSED"
            print(f"{r['case']:<44} {r['median_ms']:>10.2f} {r['p95_ms']:>8.2f} {r['max_ms']:>8.2f}  "
                  f"<= {TARGET_FRAME_MS:g} ms/frame {ok}")
        elif "error" in r:
            print(f"{r['case']:<44} not measured: {r['error']}")
        else:
            ok = "ok" if r["longest_stall_ms"] <= TARGET_STALL_MS else "MISSED"
            print(f"{r['case']:<44} {'p99 gap':>10} {r['p99_gap_ms']:>8.1f} {r['longest_stall_ms']:>8.1f}  "
                  f"longest <= {TARGET_STALL_MS:g} ms {ok}")
            print(f"{'  same window, engine paused (peer)':<44} {'p99 gap':>10} {r['idle_p99_gap_ms']:>8.1f} "
                  f"{r['idle_longest_stall_ms']:>8.1f}  (machine noise; 1-min load avg "
                  f"{r['load_avg_1m']:.1f})")
            print(f"  {r['engine_steps']} engine steps ({r['engine_steps_per_s']:.1f}/s), "
                  f"{r['pool_frames_per_s']:.0f} pool frames/s while measuring")
    out = {"machine": machine(), "qt_platform": platform_name, "results": rows,
           "targets": {"frame_ms": TARGET_FRAME_MS, "stall_ms": TARGET_STALL_MS, "jump_ms": TARGET_JUMP_MS}}
    write_json(args.json, out)
    # a case that could not be measured is a failed benchmark, whatever else ran
    return 1 if any("error" in r for r in rows) else 0
