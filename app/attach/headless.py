"""`tinyserve-gui --attach URL --seconds S --screenshot out.png`: attach the Attach tab
to a live server (or `--attach-recording FILE`), watch for S seconds, save the window
and exit (how the README's attach screenshot is made)."""

from __future__ import annotations

import sys
import time

from .spec import AttachSpec


def add_arguments(p) -> None:
    p.add_argument("--attach", action="append", default=[], metavar="URL",
                   help="open the Attach tab on this KV-event endpoint (repeatable)")
    p.add_argument("--attach-dp", type=int, default=1, metavar="N",
                   help="data-parallel ranks behind each --attach URL (port + rank)")
    p.add_argument("--attach-replay", action="append", default=[], metavar="URL",
                   help="its replay endpoint (paired in order)")
    p.add_argument("--attach-metrics", action="append", default=[], metavar="URL",
                   help="a Prometheus /metrics URL to scrape")
    p.add_argument("--attach-recording", default=None, metavar="FILE", help="play a KV-event recording instead")
    p.add_argument("--seconds", type=float, default=None,
                   help="with --attach: watch this long, then (with --screenshot) save and exit")


def spec_from_args(a) -> AttachSpec | None:
    if not (a.attach or a.attach_recording):
        return None
    return AttachSpec(kv_events=a.attach, replay=a.attach_replay, data_parallel_size=a.attach_dp, metrics_urls=a.attach_metrics,
                      recording=a.attach_recording or "", speed=1.0)


def run(app, win, spec: AttachSpec, seconds: float | None, screenshot: str | None) -> int:
    """Attach, show the tab; headless (seconds given): pump events, save, exit."""
    from .tab import attach_tab, make_tab
    tab = attach_tab(win)
    if tab is None:
        tab = make_tab(win)
        win.add_tab(tab, "Attach")
    win.tabs.setCurrentWidget(tab)
    tab.attach(spec)
    if seconds is None:
        return app.exec()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(5):
        tab.render_all()
        app.processEvents()
    f = tab.last_frame
    if screenshot:
        win.screenshot(screenshot)
        print(f"tinyserve-gui: attached {seconds:g} s, {0 if f is None else f.blocks_live} live blocks, "
              f"wrote {screenshot}")
    if f is not None and f.state == "error":
        print(f"tinyserve-gui: {f.error}", file=sys.stderr)
        return 1
    return 0
