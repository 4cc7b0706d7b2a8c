"""`tinyserve bench attach-gui`: what watching a server costs the GUI.

* End-to-end latency, publish -> block visible in a painted frame: a synthetic server
  (app/bench/attach_feed.py, our KVEventPublisher, vLLM's wire format) publishes
  requests from a process of its own; the Attach tab's worker subscribes, applies and
  paints the map; the GUI thread takes each frame as the tab does (the worker's
  frame-ready signal, or its 25 ms timer) and repaints the block map synchronously. A batch's latency is from its publish to the end of the
  first painted frame that holds it (wall clock in both processes). Target p95 <= 100 ms.
* Block-map frame time at 1,000,000 live blocks: one frame = setImage of the
  prepainted RGBA image + a synchronous repaint of the view (the GUI thread's whole
  cost; frames alternate between two images so every one uploads). Target <= 16 ms.
  The worker thread's costs per frame (reading the model's BlockMap, painting the
  image) are reported beside it.

Registered lazily by tinyserve_core.cli.bench; Qt is imported only when run."""

from __future__ import annotations

import sys
import time

import numpy as np

from .report import check_json, machine, offscreen_without_display, time_stats, write_json

TARGET_LATENCY_MS = 100.0
TARGET_FRAME_MS = 16.0


def add_parser(sub):
    from tinyserve_core.cli._parser import positive_int
    p = sub.add_parser("attach-gui", help="Attach tab: publish-to-paint latency, block-map frame time")
    for flag, default, what in (("--blocks", 1_000_000, "live blocks for the frame-time case"),
                                ("--frames", 60, "frames timed at that size"),
                                ("--seconds", 10, "how long the latency case publishes (s)"),
                                ("--rate", 50, "batches per second the server publishes")):
        p.add_argument(flag, type=positive_int(flag), default=default, help=what)
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run)
    return p


def filled_model(n: int, chain: int = 32, batch_events: int = 256):
    """A CacheModel holding `n` live blocks: chains of `chain` under 64 shared roots,
    ages spread over a minute (what a big server's map looks like)."""
    import msgspec

    from tinyserve_core.attach.cache_model import CacheModel
    from tinyserve_core.attach.wire import decode_payload
    from tinyserve_core.observe.kv_event_wire import BlockStored, EventBatch

    enc = msgspec.msgpack.Encoder()
    m = CacheModel(token_blocks_cap=0)
    roots = list(range(1, 65))
    m.apply(decode_payload(enc.encode(EventBatch(0.0, [BlockStored(
        block_hashes=[r], parent_block_hash=None, token_ids=[], block_size=16, lora_id=None,
        medium="GPU", lora_name=None) for r in roots], 0))), 0)
    h, done, events, ts = 1000, len(roots), [], 0.0
    while done < n:
        k = min(chain, n - done)
        events.append(BlockStored(block_hashes=list(range(h, h + k)), parent_block_hash=roots[(h // chain) % 64],
                                  token_ids=[], block_size=16, lora_id=None, medium="GPU", lora_name=None))
        h, done = h + k, done + k
        if len(events) == batch_events or done >= n:
            ts += 60.0 * batch_events * chain / n
            rank = (h // (n // 2 + 1)) % 2          # two ranks: two bands
            m.apply(decode_payload(enc.encode(EventBatch(ts, events, rank))), rank)
            events = []
    return m


def bench_frame(n: int, frames: int, app) -> dict:
    from app.attach.block_image import paint
    from app.attach.block_map_view import BlockMapView

    t = time.perf_counter()
    m = filled_model(n)
    fill_s = time.perf_counter() - t
    read, painted, imgs = [], [], []
    for shade in ("age", "reuse", "age"):
        t0 = time.perf_counter()
        bm = m.block_map()
        t1 = time.perf_counter()
        imgs.append(paint(bm, shade))
        t2 = time.perf_counter()
        read.append((t1 - t0) * 1e3)
        painted.append((t2 - t1) * 1e3)
    view = BlockMapView()
    view.resize(1280, 800)
    view.show()
    for _ in range(5):
        app.processEvents()
    ms = []
    for i in range(frames + 2):
        t0 = time.perf_counter()
        view.apply(imgs[i % 2], "bench")
        view.glw.viewport().repaint()
        if i >= 2:                                   # the first frames set the range up
            ms.append((time.perf_counter() - t0) * 1e3)
        app.processEvents()
    view.close()
    return {"case": "block map frame", "blocks": len(bm), "fill_s": fill_s, **time_stats(ms, "frames"),
            "worker_block_map_ms": float(np.median(read)), "worker_paint_ms": float(np.median(painted)),
            "target_ms": TARGET_FRAME_MS}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_latency(seconds: float, rate: float, app) -> dict:
    """The server is a process of its own (app/bench/attach_feed.py, as a real server
    is): it connects to the tab, which binds; each batch's ts is its publish time
    (wall clock), and a frame carries the newest ts applied."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    from app.attach.spec import AttachSpec
    from PySide6.QtCore import QEventLoop

    from app.attach.tab import AttachTab

    url = f"tcp://127.0.0.1:{_free_port()}"
    log = Path(tempfile.mkdtemp()) / "sent.json"
    tab = AttachTab()
    tab.resize(1280, 800)
    tab.show()
    painted: list[tuple[float, float]] = []          # (wall time at end of paint, newest ts in it)
    gui: list[float] = []                            # GUI thread ms per frame: apply + paint
    apply = tab.apply

    def apply_and_paint(f):                          # the tab's own path: signal or timer
        t0 = time.perf_counter()
        apply(f)
        tab.block_map.glw.viewport().repaint()
        painted.append((time.time(), f.server_t))
        gui.append((time.perf_counter() - t0) * 1e3)
    tab.apply = apply_and_paint
    tab.attach(AttachSpec(kv_events=[url], bind=True))
    feed = subprocess.Popen([sys.executable, "-m", "app.bench.attach_feed", "--url", url, "--ranks", "1",
                             "--capacity", "20000", "--rate", str(rate), "--seconds", str(seconds),
                             "--delay", "2", "--sent-log", str(log)])
    until = None
    while until is None or time.perf_counter() < until:
        if until is None and feed.poll() is not None:
            until = time.perf_counter() + 1.0            # the last batches reach the screen
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 10)
    tab.shutdown()
    tab.close()
    sent = json.loads(log.read_text()) if log.exists() else []
    lat, j = [], 0
    for t_pub in sent:
        while j < len(painted) and painted[j][1] < t_pub:
            j += 1
        if j < len(painted):
            lat.append((painted[j][0] - t_pub) * 1e3)
    return {"case": "publish -> painted", "batches": len(sent), "not_painted": len(sent) - len(lat),
            **time_stats(lat or [float("nan")], "n"), "target_ms": TARGET_LATENCY_MS,
            "gui_frame_ms": time_stats(gui or [float("nan")], "frames"),
            "latency_ms_series": [round(x, 1) for x in lat]}


def run(args) -> int:
    check_json(args.json)
    offscreen_without_display()
    from PySide6.QtWidgets import QApplication
    from tqdm import tqdm

    app = QApplication.instance() or QApplication(["tinyserve-bench-attach-gui"])
    rows = []
    for case in tqdm(("latency", "frame"), desc="bench attach-gui", unit="case", file=sys.stderr):
        rows.append(bench_latency(args.seconds, args.rate, app) if case == "latency"
                    else bench_frame(args.blocks, args.frames, app))
    mach = machine()
    print(f"\nAttach tab on {mach}")
    print(f"{'case':<20} {'size':>16} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'target':>8}")
    for r in rows:
        size = f"{r['blocks']:,} blocks" if "blocks" in r else f"{r['batches']} batches"
        ok = "ok" if r["p95_ms"] <= r["target_ms"] else "MISSED"
        print(f"{r['case']:<20} {size:>16} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} "
              f"{'<= %g' % r['target_ms']:>8} {ok}")
    fr = rows[1]
    print(f"worker thread per frame at {fr['blocks']:,} blocks: read BlockMap {fr['worker_block_map_ms']:.0f} ms, "
          f"paint RGBA {fr['worker_paint_ms']:.0f} ms; latency batches never painted: {rows[0]['not_painted']}; "
          f"GUI thread per frame while live (apply + paint, whole tab): median "
          f"{rows[0]['gui_frame_ms']['median_ms']:.1f} ms, p95 {rows[0]['gui_frame_ms']['p95_ms']:.1f} ms")
    write_json(args.json, {"machine": mach, "rows": rows})
    return 0
