"""`tinyserve-gui`: the desktop lab. With --offscreen --steps N --screenshot out.png it
runs N engine steps, renders, saves the PNG and exits (how the README's screenshots
are made); --summary-json writes the engine summary of those steps and
--check-layout WxH reports text that does not fit its widget at that window size.
A bad flag, view or config is one line on stderr and exit 2, before anything runs."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# the views `--view` can name: the central pool and the Serving tab's docks
VIEW_NAMES = ("Block pool", "Controls", "Cache selection", "Kernels", "Block details",
              "Metrics", "Block tables", "Event log")


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`tinyserve-gui: --size: ...`) and exit 2, like the CLI."""

    def error(self, message: str):
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 1600x1000, got {text!r}") from None
    if not (320 <= w <= 16384 and 240 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"expected a size from 320x240 to 16384x16384, got {text!r}")
    return w, h


def parse_args(argv=None) -> argparse.Namespace:
    p = _OneLineParser(prog="tinyserve-gui", description="TinyServe desktop lab")
    p.add_argument("--config", help="session config JSON (the one `tinyserve simulate --config` reads)")
    p.add_argument("--model", help="model folder (Hugging Face checkpoint); default: the shipped model")
    p.add_argument("--offscreen", action="store_true", help="no window: Qt's offscreen platform")
    p.add_argument("--steps", type=int, default=None, help="run this many engine steps, then (with --screenshot) save and exit")
    p.add_argument("--screenshot", help="PNG to write after --steps")
    p.add_argument("--summary-json", help="headless: write the engine summary of the steps run "
                   "(the keys of `tinyserve simulate --summary-json`)")
    p.add_argument("--view", default=None, choices=VIEW_NAMES, metavar="VIEW",
                   help=f"screenshot one view instead of the window: {', '.join(VIEW_NAMES)}")
    p.add_argument("--size", type=_size, default=None,
                   help="window size WxH (default: the last size, else 90%% of the screen)")
    p.add_argument("--check-layout", type=_size, default=None, metavar="WxH",
                   help="lay the window out at WxH (after --steps, default 30), list text that "
                        "does not fit or overlaps; exit 1 when there is any")
    p.add_argument("--scene", default=None, metavar="NAME",
                   help="the Scene tab's scene: a name under assets/scenes (room, apartment) or a .json path")
    p.add_argument("--timeout", type=float, default=600.0, help="headless: give up after this many seconds")
    from .attach.headless import add_arguments          # issue 15: --attach URL --seconds S
    add_arguments(p)
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 0:
        p.error("--steps: must be >= 0")
    if a.check_layout is not None:
        a.size = a.check_layout
        a.steps = 30 if a.steps is None else a.steps
    if a.screenshot and a.steps is None and a.seconds is None:
        p.error("--screenshot needs --steps N (or --attach URL --seconds S)")
    if a.summary_json and a.steps is None:
        p.error("--summary-json needs --steps N")
    if a.view and not a.screenshot:
        p.error("--view needs --screenshot")
    return a


def _config(a):
    from tinyserve_core.engine.config import EngineConfig
    cfg = EngineConfig.load(a.config) if a.config else None
    if a.model:
        cfg = EngineConfig.from_dict({"model": a.model}, base=cfg)
    return cfg


def _check_outputs(a) -> None:
    """Output paths (and the scene named) checked before the engine starts, not after N steps."""
    from tinyserve_core.writers import check_writable
    if a.scene:
        from tinyserve_core.scene.spec import scene_path
        scene_path(a.scene)
    if a.screenshot:
        check_writable(a.screenshot, "screenshot")
    if a.summary_json:
        check_writable(a.summary_json, "summary_json")


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QCoreApplication, QSettings, Qt
    from PySide6.QtWidgets import QApplication

    from tinyserve_core.errors import TinyServeError

    try:
        cfg = _config(a)
        _check_outputs(a)
    except TinyServeError as e:
        print(f"tinyserve-gui: {e}", file=sys.stderr)
        return 2
    # One GL context group for every view: pyqtgraph compiles its shader programs once per
    # process, and a scene view made after another was destroyed must still be able to use them.
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    # Python's cycle collector must run on the GUI thread: triggered by a worker thread (the
    # scene lab's, the attach worker's) it can destroy a widget there and deadlock or crash
    # Qt. pyqtgraph's collector turns automatic collection off and collects from a timer.
    from pyqtgraph.util.garbage_collector import GarbageCollector
    gc_on_gui_thread = GarbageCollector(interval=1.0)  # noqa: F841  (kept alive by this frame)
    app.setApplicationName("tinyserve-gui")
    from .main_window import MainWindow

    headless = a.steps is not None or a.seconds is not None
    settings = None
    if headless:   # reproducible shots: ignore and keep the user's saved layout
        settings = QSettings(str(Path(tempfile.mkdtemp()) / "headless.ini"), QSettings.Format.IniFormat)
    win = MainWindow(cfg, settings=settings, restore_layout=not headless)
    if a.scene:
        _choose_scene(win, a.scene)
    if a.size is not None:
        win.resize(*a.size)
    win.show()
    from .attach.headless import run as run_attach, spec_from_args
    spec = spec_from_args(a)
    if spec is not None:                                # issue 15: the Attach tab
        rc = run_attach(app, win, spec, a.seconds, a.screenshot)
    elif not headless:
        rc = app.exec()
    else:
        rc = run_headless(app, win, a)
    _dispose(app, win)
    return rc


def _choose_scene(win, scene: str) -> None:
    """Point the Scene tab (when the app has one) at `scene` before it first loads."""
    for i in range(win.tabs.count()):
        tab = win.tabs.widget(i)
        if hasattr(tab, "choose_scene"):
            tab.choose_scene(scene)


def _dispose(app, win) -> None:
    """Tear the window down while the QApplication still exists: left to interpreter
    exit, widgets (GL ones especially) can be destroyed after Qt and crash."""
    from PySide6.QtCore import QCoreApplication, QEvent
    win.close()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()


def write_summary(worker, path: str) -> dict:
    """The engine summary of the steps run, as `tinyserve simulate --summary-json` writes it."""
    from tinyserve_core.observe.summary import summarize, summary_to_json
    from tinyserve_core.writers import write_json
    out = summary_to_json(summarize(worker.records()))
    write_json(path, out, "summary_json")
    return out


def run_headless(app, win, a: argparse.Namespace) -> int:
    from tinyserve_core.errors import TinyServeError

    tab = win.serving
    tab.show_error_dialogs = False
    worker = tab.worker
    steps = a.steps
    t_end = time.monotonic() + a.timeout

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
    rc = 0
    try:
        if a.summary_json:
            write_summary(worker, a.summary_json)
            print(f"tinyserve-gui: summary -> {a.summary_json}")
        if a.screenshot:
            win.screenshot(a.screenshot, a.view)
            print(f"tinyserve-gui: {worker.steps_done} steps, wrote {a.screenshot}")
    except (TinyServeError, OSError) as e:
        print(f"tinyserve-gui: {e}", file=sys.stderr)
        rc = 1
    if a.check_layout is not None:
        from .layout_check import check_window
        findings = check_window(win)
        for f in findings:
            print(f, file=sys.stderr)
        w, h = a.check_layout
        print(f"tinyserve-gui: layout at {w}x{h}: "
              + (f"{len(findings)} finding(s)" if findings else "clean"))
        rc = rc or (1 if findings else 0)
    win.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
