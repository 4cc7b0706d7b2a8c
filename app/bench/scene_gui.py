"""`tinyserve bench scene-gui`: what the Scene tab costs, measured through the tab itself.

* Orbiting: frames per second while the camera keeps moving (each frame: drag event ->
  motion-quality bake render on the worker -> colour -> painted), and the worker's render time
  alone (the peer: the same frame without the GUI around it).
* Still refine: the full-quality field render after the mouse rests.
* Query-to-overlay: Enter -> embedding + relevancy on the worker -> overlay painted.
* Plan-to-draw: Plan -> OMPL on the worker -> path projected and painted.
* Longest event-loop stall (gap between ticks of a 5 ms timer) through all of it: the GUI
  thread must never wait on the work.

Registered lazily by tinyserve_core.cli.bench (by module name: the core never
imports app). Imports Qt only when run. Runs on the offscreen platform when there is no display."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .report import check_json, machine, offscreen_without_display, time_stats, write_json

TARGET_ORBIT_FPS = 20.0  # issue 19: a view that keeps up with the mouse
TARGET_QUERY_MS = 150.0
QUERIES = ("the red mug", "something to read", "a light to read by", "something to sit on", "a giraffe",
           "the trash bin", "a house plant", "a green rubber ball")
# (target, robot, radius) per shipped scene; another scene plans to its first objects
PLANS = {"room": (("red mug", "ground", 0.12), ("stack of books", "ground", 0.12), ("potted plant", "ground", 0.12),
                  ("red mug", "gripper", 0.05), ("desk lamp", "gripper", 0.05)),
         "apartment": (("red kettle", "ground", 0.12), ("bookshelf", "ground", 0.12), ("dog bed", "ground", 0.12),
                       ("red kettle", "gripper", 0.05), ("floor lamp", "gripper", 0.05))}


def scene_plans(spec) -> tuple[tuple[str, str, float], ...]:
    """The plans timed for a scene: its own list, else three ground plans and two gripper
    plans to its first objects (a target the scene lacks would leave the plan panel's
    previous target in place and time a plan to that instead)."""
    if spec.name in PLANS:
        return PLANS[spec.name]
    objs = [o.label for o in spec.objects if not o.structure]
    return tuple((t, "ground", 0.12) for t in objs[:3]) + tuple((t, "gripper", 0.05) for t in objs[:2])


def add_parser(sub):
    p = sub.add_parser("scene-gui", help="Scene tab: orbit fps, still refine, query-to-overlay, plan-to-draw")
    p.add_argument("--size", type=int, default=256, help="render side in pixels")
    p.add_argument("--frames", type=int, default=40, help="orbit frames to time")
    p.add_argument("--refines", type=int, default=3, help="still refines to time")
    p.add_argument("--scene", default="room", help="scene name or JSON path")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run)
    return p


def _stats(ms) -> dict:
    return time_stats(ms, "n")


class _Ticks:
    """Largest gap between ticks of a 5 ms timer: how long the GUI thread was blocked."""

    def __init__(self):
        from PySide6.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))
        self.timer.start(5)

    def longest_gap_ms(self) -> float:
        t = np.asarray(self.times)
        return float(np.diff(t).max() * 1000) if len(t) > 1 else float("nan")


def _pump(app, pred, timeout_s: float = 120.0):
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("the Scene tab did not answer in time")
        app.processEvents()
        time.sleep(0.0005)


def run(args) -> int:
    from tinyserve_core.errors import ConfigError
    from tinyserve_core.scene.spec import load_scene

    check_json(args.json)
    # a scene that does not load would leave the tab waiting for it: one line here instead
    plans = scene_plans(load_scene(args.scene))
    try:
        if not 32 <= args.size <= 1024:
            raise ConfigError("--size", f"must lie in [32, 1024] pixels, got {args.size}")
        if args.frames < 2 or args.refines < 1:
            raise ConfigError("--frames", "need --frames >= 2 and --refines >= 1")
    except ConfigError as e:
        print(f"tinyserve bench scene-gui: {e}", file=sys.stderr)
        return 2
    offscreen_without_display()
    from PySide6.QtWidgets import QApplication
    from tqdm import tqdm

    from app.scene.tab import SceneTab

    app = QApplication.instance() or QApplication(["tinyserve-bench-scene-gui"])
    tab = SceneTab(args.scene)
    tab.resize(1500, 900)
    tab.show()
    tab.render_size = args.size
    t0 = time.perf_counter()
    _pump(app, lambda: tab.ready and tab.worker.idle())
    load_s = time.perf_counter() - t0
    tab._still.setInterval(10 ** 6)  # no refine while the orbit is timed
    bar = tqdm(total=2 * args.frames + args.refines + len(QUERIES) + len(plans), desc="bench scene-gui",
               unit="step", file=sys.stderr)
    ticks = _Ticks()

    # orbiting: the next drag as soon as the previous frame is painted, as a held mouse
    # does; at the fixed size first, then with the tab's adaptive motion resolution
    orbit = {}
    for adaptive in (False, True):
        tab.adaptive = adaptive
        frame_ms, compute_ms, sides = [], [], []
        t_orbit = time.perf_counter()
        for _ in range(args.frames):
            t = time.perf_counter()
            paints = tab.view.paints
            tab._on_drag("orbit", 6.0, 0.0)
            seq = tab._seq
            _pump(app, lambda: tab.frame.seq == seq and tab.view.paints > paints)
            frame_ms.append((time.perf_counter() - t) * 1000)
            compute_ms.append(tab.frame.ms)
            sides.append(tab.frame.result.camera.width)
            bar.update()
        orbit[adaptive] = (args.frames / (time.perf_counter() - t_orbit), frame_ms, compute_ms, sides)
    orbit_fps = orbit[False][0]
    orbit_stall = ticks.longest_gap_ms()

    refine_ms, refine_compute = [], []
    for _ in range(args.refines):
        tab.orbit = tab.orbit.orbited(20.0, 0.0)
        t = time.perf_counter()
        tab.request_frame("full")
        seq = tab._seq
        _pump(app, lambda: tab.frame.seq == seq)
        app.processEvents()
        refine_ms.append((time.perf_counter() - t) * 1000)
        refine_compute.append(tab.frame.ms)
        bar.update()
    tab.reset_view()
    _pump(app, lambda: tab.worker.idle())

    query_ms, query_core = [], []
    for q in QUERIES:
        tab.ask(q)
        _pump(app, lambda: tab.query_result is not None and tab.query_result.query == q and "query" not in tab._pending)
        query_ms.append(tab.timings["query_to_overlay_ms"])
        query_core.append(tab.query_result.latency_ms)
        bar.update()

    plan_ms, plan_core, solved = [], [], 0
    for target, robot, radius in plans:
        tab.plan_panel.robot.setCurrentText(robot)
        tab.plan_panel.radius.setText(str(radius))
        tab.plan_panel.target.setCurrentText(target)
        if tab.plan_panel.target.currentText() != target:
            raise RuntimeError(f"the plan panel does not offer {target!r}")
        tab.plan()
        _pump(app, lambda: "plan" not in tab._pending)
        plan_ms.append(tab.timings["plan_to_draw_ms"])
        plan_core.append(tab.plan_result.planning_ms)
        solved += tab.plan_result.solved
        bar.update()
    bar.close()
    stall = ticks.longest_gap_ms()
    tab.shutdown()

    rows = [
        {"case": f"orbit, motion frames {args.size}px (drag -> painted)", **_stats(orbit[False][1]),
         "fps": orbit[False][0]},
        {"case": "  worker render only (peer)", **_stats(orbit[False][2])},
        {"case": f"orbit, adaptive (median side {int(np.median(orbit[True][3]))}px)", **_stats(orbit[True][1]),
         "fps": orbit[True][0], "median_side": int(np.median(orbit[True][3]))},
        {"case": "  worker render only (peer)", **_stats(orbit[True][2])},
        {"case": f"still refine, full {args.size}px (request -> painted)", **_stats(refine_ms)},
        {"case": f"  worker render only (peer)", **_stats(refine_compute)},
        {"case": "query -> overlay painted", **_stats(query_ms)},
        {"case": "  core query incl. relevancy (peer)", **_stats(query_core)},
        {"case": f"plan -> path drawn ({solved}/{len(plans)} solved)", **_stats(plan_ms)},
        {"case": "  core planning (peer)", **_stats(plan_core)},
    ]
    plat = app.platformName()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nScene tab benchmark on {machine()}, Qt platform '{plat}', 1-min load avg {load:.1f}, "
          f"scene loaded in {load_s:.1f} s")
    print(f"{'case':<52} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for r in rows:
        print(f"{r['case']:<52} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f}")
    ok_fps = "ok" if orbit_fps >= TARGET_ORBIT_FPS else "MISSED"
    med_q = float(np.median(query_ms))
    ok_q = "ok" if med_q <= TARGET_QUERY_MS else "MISSED"
    ok_ad = "ok" if orbit[True][0] >= TARGET_ORBIT_FPS else "MISSED"
    print(f"orbit: {orbit_fps:.1f} frames/s at {args.size}px (target >= {TARGET_ORBIT_FPS:g}) {ok_fps}; "
          f"adaptive {orbit[True][0]:.1f} frames/s {ok_ad}; "
          f"query-to-overlay median {med_q:.0f} ms (target <= {TARGET_QUERY_MS:g}) {ok_q}")
    print(f"longest GUI-thread stall: {orbit_stall:.0f} ms while orbiting, {stall:.0f} ms over the whole run")
    out = {"machine": machine(), "qt_platform": plat, "load_avg_1m": load, "size": args.size,
           "scene_load_s": load_s, "orbit_fps": orbit_fps, "orbit_fps_adaptive": orbit[True][0], "results": rows,
           "longest_stall_ms": {"orbit": orbit_stall, "all": stall},
           "targets": {"orbit_fps": TARGET_ORBIT_FPS, "query_to_overlay_ms": TARGET_QUERY_MS}}
    write_json(args.json, out)
    return 0

