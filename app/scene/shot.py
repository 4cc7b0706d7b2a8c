"""Headless screenshots of the Scene tab as a new user would drive it (the README's
pictures): orbit, click an object (the mug), ask "something to read", plan a path to the
answer, then save the tab, the render view and (where OpenGL works) the 3D view.

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m app.scene.shot docs/screenshots
    xvfb-run -a -s "-screen 0 1920x1080x24" python -m app.scene.shot out --scene apartment \
        --pick "red kettle" --query "where the dog sleeps" --prefix apartment-
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.scene.shot")
    p.add_argument("out", help="folder for scene-tab.png, scene-render.png, scene-3d.png")
    p.add_argument("--query", default="something to read")
    p.add_argument("--scene", default="room", help="scene name or .json path")
    p.add_argument("--pick", default="red mug", help="the object to click")
    p.add_argument("--prefix", default="scene-", help="file names: <prefix>tab.png, <prefix>render.png, <prefix>3d.png")
    p.add_argument("--size", default="1600x1000", help="window size WxH")
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args(argv)
    try:
        w, h = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size: expected WxH like 1600x1000, got {a.size!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    from PySide6.QtWidgets import QApplication

    from .tab import SceneTab

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tab = SceneTab(scene=a.scene)
    tab.resize(w, h)
    tab.show()
    end = time.monotonic() + a.timeout

    def pump(pred):
        while not pred():
            if time.monotonic() > end:
                raise TimeoutError("the Scene tab did not get there in time")
            app.processEvents()
            time.sleep(0.01)

    def settle():
        pump(lambda: tab.ready and tab.worker.idle() and not tab._still.isActive() and tab._refine_after is None
             and tab.frame.quality == "full")

    settle()
    tab.set_orbit(tab.orbit.orbited(-40, 0))  # a little orbit, as a person would
    settle()
    pick = tab.lab.labels.index(a.pick) if a.pick in tab.lab.labels else -1
    ys, xs = np.nonzero(tab.frame.result.label == pick)
    if len(xs):
        tab.pick_at(float(np.median(xs)) + 0.5, float(np.median(ys)) + 0.5)
        pump(lambda: tab.pick_result is not None)
    tab.ask(a.query)
    pump(lambda: tab.query_result is not None and "query" not in tab._pending)
    if tab.query_result.candidates:
        tab.plan()
        pump(lambda: "plan" not in tab._pending)
    settle()
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    written = []
    if tab.grab().save(str(out / f"{a.prefix}tab.png"), "PNG"):
        written.append(out / f"{a.prefix}tab.png")
    written.append(tab.export_render_png(out / f"{a.prefix}render.png"))
    if tab.view3d.available:
        written.append(tab.export_3d_png(out / f"{a.prefix}3d.png"))
    tab.shutdown()
    tab.deleteLater()
    app.processEvents()
    for f in written:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
