"""`tinyserve-gui`: the desktop lab. With --offscreen --steps N --screenshot out.png it
runs N engine steps, renders, saves the PNG and exits (how the README's screenshots
are made)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tinyserve-gui", description="TinyServe desktop lab")
    p.add_argument("--config", help="session config JSON (the one `tinyserve simulate --config` reads)")
    p.add_argument("--model", help="model folder (Hugging Face checkpoint); default: the shipped model")
    p.add_argument("--offscreen", action="store_true", help="no window: Qt's offscreen platform")
    p.add_argument("--steps", type=int, default=None, help="run this many engine steps, then (with --screenshot) save and exit")
    p.add_argument("--screenshot", help="PNG to write after --steps")
    p.add_argument("--view", default=None, help="screenshot one view (e.g. 'Block pool', 'Metrics', 'Cache selection') instead of the window")
    p.add_argument("--size", default="1600x1000", help="window size WxH (default 1600x1000)")
    p.add_argument("--timeout", type=float, default=600.0, help="headless: give up after this many seconds")
    from .attach.headless import add_arguments          # issue 15: --attach URL --seconds S
    add_arguments(p)
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 0:
        p.error("--steps: must be >= 0")
    if a.screenshot and a.steps is None and a.seconds is None:
        p.error("--screenshot needs --steps N (or --attach URL --seconds S)")
    try:
        w, h = (int(x) for x in a.size.lower().split("x"))
        a.size = (w, h)
    except ValueError:
        p.error(f"--size: expected WxH like 1600x1000, got {a.size!r}")
    return a


def _config(a):
    from tinyserve_core.engine.config import EngineConfig
    cfg = EngineConfig.load(a.config) if a.config else None
    if a.model:
        cfg = EngineConfig.from_dict({"model": a.model}, base=cfg)
    return cfg


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from tinyserve_core.errors import TinyServeError

    try:
        cfg = _config(a)
    except TinyServeError as e:
        print(f"tinyserve-gui: {e}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("tinyserve-gui")
    from .main_window import MainWindow

    headless = a.steps is not None or a.seconds is not None
    settings = None
    if headless:   # reproducible shots: ignore and keep the user's saved layout
        settings = QSettings(str(Path(tempfile.mkdtemp()) / "headless.ini"), QSettings.Format.IniFormat)
    win = MainWindow(cfg, settings=settings, restore_layout=not headless)
    win.resize(*a.size)
    win.show()
    from .attach.headless import run as run_attach, spec_from_args
    spec = spec_from_args(a)
    if spec is not None:                                # issue 15: the Attach tab
        rc = run_attach(app, win, spec, a.seconds, a.screenshot)
    elif not headless:
        rc = app.exec()
    else:
        rc = run_headless(app, win, a.steps, a.screenshot, a.view, a.timeout)
    _dispose(app, win)
    return rc


def _dispose(app, win) -> None:
    """Tear the window down while the QApplication still exists: left to interpreter
    exit, widgets (GL ones especially) can be destroyed after Qt and crash."""
    from PySide6.QtCore import QCoreApplication, QEvent
    win.close()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()


def run_headless(app, win, steps: int, screenshot: str | None, view: str | None,
                 timeout_s: float) -> int:
    tab = win.serving
    tab.show_error_dialogs = False
    worker = tab.worker
    t_end = time.monotonic() + timeout_s

    def pump(pred) -> bool:
        while not pred():
            if time.monotonic() > t_end:
                return False
            app.processEvents()
            time.sleep(0.005)
        return True

    def fail(default: str) -> int:
        for _ in range(20):   # let the queued `failed` signal arrive
            app.processEvents()
        print(f"tinyserve-gui: {tab.last_error[0] if tab.last_error else default}", file=sys.stderr)
        if tab.last_error and os.environ.get("TINYSERVE_DEBUG"):
            print(tab.last_error[1], file=sys.stderr)
        win.close()
        return 1

    ok = pump(lambda: worker.state in ("paused", "error"))
    if not ok or worker.state == "error":
        return fail("the engine did not start in time")
    worker.step_n(steps)
    ok = pump(lambda: worker.steps_done >= steps or worker.state in ("done", "error"))
    if worker.state == "error" or not ok:
        return fail("timed out")
    # the snapshot of the last step, then a few frames so animations and plots settle
    pump(lambda: getattr(tab, "last_snapshot", None) is not None
         and tab.last_snapshot.step >= worker.steps_done)
    for _ in range(3):
        tab.render_all()
        app.processEvents()
    if screenshot:
        win.screenshot(screenshot, view)
        print(f"tinyserve-gui: {worker.steps_done} steps, wrote {screenshot}")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
