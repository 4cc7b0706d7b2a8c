"""The Scene tab driven as a user would: click a known object's pixel, type queries, plan
a path, export, navigate, train (cancelled); and the 3D view degrading without OpenGL.
One SceneTab (and so one SceneLab) is shared by the module; ground truth comes from the
analytic renderer, never from the field being tested."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui

WAIT_MS = 60_000


def pump(app, pred, timeout_ms=WAIT_MS):
    end = time.monotonic() + timeout_ms / 1000
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("the Scene tab did not get there in time")
        app.processEvents()
        time.sleep(0.005)


def plan(qapp, tab, robot: str, radius: str, target: str = "red mug"):
    """Fill the plan panel as a user would, press Plan and wait for the result (the robot
    before the radius: choosing a robot resets the radius field)."""
    p = tab.plan_panel
    p.target.setCurrentText(target)
    p.robot.setCurrentText(robot)
    p.radius.setText(radius)
    tab.plan_result = None
    p.go.click()
    pump(qapp, lambda: tab.plan_result is not None)
    return tab.plan_result


@pytest.fixture(scope="module")
def tab(qapp, tmp_path_factory):
    from app.scene import SceneTab

    t = SceneTab(weights_dir=tmp_path_factory.mktemp("scene-weights"))
    t.resize(1500, 900)
    t.show()
    pump(qapp, lambda: t.ready and t.worker.idle())
    yield t
    t.shutdown()
    t.close()
    t.deleteLater()
    qapp.processEvents()


def settle(qapp, tab):
    """Wait until the view rests on a full-quality frame and the worker has nothing to do."""
    pump(qapp, lambda: tab.worker.idle() and not tab._still.isActive() and tab._refine_after is None
         and tab.frame.quality == "full")
    qapp.processEvents()


def truth(tab, label: str):
    """Pixels of `label` in the analytic render of the displayed frame's camera."""
    from tinyserve_core.scene.analytic import render_analytic

    gt = render_analytic(tab.lab.spec, tab.frame.result.camera)
    return gt["label"] == tab.lab.labels.index(label)


def centre_pixel(mask: np.ndarray) -> tuple[float, float]:
    """The object pixel deepest inside the object's silhouette (not on an edge)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(dist.argmax(), dist.shape)
    return x + 0.5, y + 0.5


def test_click_on_a_known_object_shows_its_label(qapp, qtbot, tab):
    from PySide6.QtCore import Qt

    settle(qapp, tab)
    tab.pick_result = None
    for label in ("table", "chair"):
        x, y = centre_pixel(truth(tab, label))
        qtbot.mouseClick(tab.view, Qt.MouseButton.LeftButton, pos=tab.view.to_widget(x, y).toPoint())
        pump(qapp, lambda: tab.pick_result is not None and tab.pick_result.label == label, 20_000)
        assert label in tab.pick_info.text() and "confidence" in tab.pick_info.text()
        caption = tab.view.overlays.pick[2]
        assert caption.startswith(label)
        px, py = tab.view.overlays.pick[:2]  # the marker sits on the clicked pixel
        assert abs(px - x) < 1.5 and abs(py - y) < 1.5
        tab.pick_result = None


def test_text_query_highlights_the_right_object(qapp, qtbot, tab):
    from PySide6.QtCore import Qt

    settle(qapp, tab)
    tab.query_result = None
    qtbot.keyClicks(tab.query_panel.edit, "something to drink coffee from")
    qtbot.keyClick(tab.query_panel.edit, Qt.Key.Key_Return)
    pump(qapp, lambda: tab.query_result is not None)
    assert tab.query_result.status == "found"
    assert "red mug" in tab.query_panel.status.text()
    assert tab.output.currentText() == "Query relevancy"
    (uv, front, _, caption), = tab.view.overlays.boxes
    assert caption == "red mug" and front.all()
    mug = truth(tab, "red mug")
    assert mug.sum() > 20
    ys, xs = np.nonzero(mug)  # the drawn box encloses the mug's true pixels
    assert uv[:, 0].min() <= xs.min() + 1 and uv[:, 0].max() >= xs.max() - 1
    assert uv[:, 1].min() <= ys.min() + 1 and uv[:, 1].max() >= ys.max() - 1
    rel = tab.relevancy()
    assert rel[mug].mean() > 0.8 and rel[~mug].mean() < 0.1
    assert tab.plan_panel.target.currentText() == "red mug"
    assert tab.query_panel.best_view.isEnabled()
    assert tab.query_panel.history.item(0).text().endswith("red mug")
    assert tab.timings["query_to_overlay_ms"] > 0


def test_ambiguous_and_not_found_are_shown_as_such(qapp, tab):
    tab.ask("a cardboard box")
    pump(qapp, lambda: tab.query_result is not None and tab.query_result.query == "a cardboard box")
    assert tab.query_result.status == "ambiguous"
    assert "ambiguous" in tab.query_panel.status.text()
    assert sorted(b[3] for b in tab.view.overlays.boxes) == ["blue box?", "brown box?"]
    tab.ask("a giraffe")
    pump(qapp, lambda: tab.query_result.query == "a giraffe")
    assert "not found" in tab.query_panel.status.text()
    assert tab.view.overlays.boxes == []
    assert not tab.query_panel.best_view.isEnabled()
    assert float(tab.relevancy().max()) == 0.0


def test_corrections_and_three_way_ambiguity_are_shown(qapp, tab):
    tab.ask("the red mgu")
    pump(qapp, lambda: tab.query_result is not None and tab.query_result.query == "the red mgu")
    assert tab.query_result.label == "red mug" and "mgu" in tab.query_panel.status.text()
    assert tab.query_log[-1]["corrected"] == "the red mug" and tab.query_log[-1]["notes"]
    tab.ask("what is on the table")
    pump(qapp, lambda: tab.query_result.query == "what is on the table")
    assert sorted(b[3] for b in tab.view.overlays.boxes) == ["desk lamp?", "red mug?", "stack of books?"]
    assert "planning takes" in tab.query_panel.status.text()


def test_empty_query_is_refused_next_to_the_box(qapp, tab):
    n = len(tab.query_log)
    tab.ask("   ")
    assert tab.query_panel.error.isVisible() and "query" in tab.query_panel.error.text()
    assert len(tab.query_log) == n


@pytest.mark.parametrize("robot,radius", [("ground", "0.12"), ("gripper", "0.05")])
def test_plan_draws_a_collision_free_path(qapp, tab, robot, radius):
    from tinyserve_core.eval.scene import path_clearance

    res = plan(qapp, tab, robot, radius)
    assert res.solved and res.robot.kind == robot
    # every drawn point is the planned path, and the path is clear of the true geometry
    uv, front = tab.view.overlays.path
    want, _ = tab.frame.result.camera.project(res.path)
    assert np.allclose(uv, want) and len(uv) == len(res.path)
    assert path_clearance(tab.lab.spec, res) >= res.robot.radius
    text = tab.plan_panel.result.text()
    assert "length" in text and "min clearance" in text and "planning" in text
    assert tab.timings["plan_to_draw_ms"] > 0


def test_unreachable_goal_says_no_path(qapp, tab):
    plan(qapp, tab, "ground", "0.9")  # wider than every gap in the room
    assert not tab.plan_result.solved
    assert "NO PATH" in tab.plan_panel.result.text()
    assert tab.view.overlays.path is None


def test_bad_plan_fields_show_a_message_next_to_the_field(qapp, tab):
    p = tab.plan_panel
    for text, needle in (("abc", "number"), ("5", "[0.01, 1.0]"), ("-1", "[0.01, 1.0]")):
        p.radius.setText(text)
        before = tab.plan_result
        p.go.click()
        assert p.radius_error.isVisible() and "radius" in p.radius_error.text() and needle in p.radius_error.text()
        assert tab.plan_result is before and "plan" not in tab._pending
    p.radius.setText("0.12")
    assert not p.radius_error.isVisible()


def test_exports_are_written_and_valid(qapp, tab, tmp_path):
    from PySide6.QtGui import QImage

    from tinyserve_core.errors import TinyServeError

    tab.ask("the red mug")
    pump(qapp, lambda: tab.query_result.query == "the red mug")
    assert plan(qapp, tab, "ground", "0.12").solved

    png = tab.export_render_png(tmp_path / "render.png")
    img = QImage(str(png))
    assert not img.isNull() and img.width() == tab.view.width()

    data = json.loads(tab.export_path_json(tmp_path / "path.json").read_text())
    assert data["status"] == "solved" and data["target"] == "red mug" and data["scene"] == "room"
    assert np.allclose(data["path"], tab.plan_result.path) and data["length"] == pytest.approx(tab.plan_result.length)

    rows = list(csv.reader(open(tab.export_path_csv(tmp_path / "path.csv"))))
    assert rows[0] == ["index", "x", "y", "z", "yaw", "s"]
    assert len(rows) - 1 == len(tab.plan_result.path)
    assert float(rows[-1][5]) == pytest.approx(tab.plan_result.length, rel=1e-3)

    lines = tab.export_query_log(tmp_path / "queries.jsonl").read_text().splitlines()
    log = [json.loads(s) for s in lines]
    assert log[-1]["query"] == "the red mug" and log[-1]["answer"] == "red mug"
    assert len(log[-1]["candidates"][0]["centroid"]) == 3
    assert len(log) == len(tab.query_log)

    if not tab.view3d.available:
        with pytest.raises(TinyServeError, match="3D view"):
            tab.export_3d_png(tmp_path / "3d.png")


def test_nothing_to_export_is_an_error(tmp_path):
    from app.scene.exports import write_path_csv, write_path_json, write_query_log
    from tinyserve_core.errors import InputFileError

    for fn in (lambda: write_path_json(tmp_path / "p.json", None, "room"),
               lambda: write_path_csv(tmp_path / "p.csv", None),
               lambda: write_query_log(tmp_path / "q.jsonl", [])):
        with pytest.raises(InputFileError):
            fn()
    assert not list(tmp_path.iterdir())


def _drag(view, start, deltas, button):
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(*start)

    def send(kind, btn, btns):
        ev = QMouseEvent(kind, pos, view.mapToGlobal(pos), btn, btns, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(view, ev)

    send(QEvent.Type.MouseButtonPress, button, button)
    for dx, dy in deltas:
        pos = pos + QPointF(dx, dy)
        send(QEvent.Type.MouseMove, Qt.MouseButton.NoButton, button)
    send(QEvent.Type.MouseButtonRelease, button, Qt.MouseButton.NoButton)


def test_orbit_pan_zoom_render_the_bake_then_refine(qapp, qtbot, tab):
    from PySide6.QtCore import Qt

    settle(qapp, tab)
    before = tab.orbit
    seq = tab.frame.seq
    c = tab.view.rect().center()
    _drag(tab.view, (c.x(), c.y()), [(10, 0)] * 6, Qt.MouseButton.LeftButton)
    assert tab.orbit.azimuth != before.azimuth and tab.orbit.target == before.target
    pump(qapp, lambda: tab.frame.seq > seq)
    moved = tab.orbit
    _drag(tab.view, (c.x(), c.y()), [(0, 8)] * 3, Qt.MouseButton.RightButton)
    assert tab.orbit.target != moved.target and tab.orbit.azimuth == moved.azimuth
    d = tab.orbit.distance
    tab._on_wheel(2.0)
    assert tab.orbit.distance == pytest.approx(d * 0.81)
    # the newest request is refined at full quality once the mouse rests
    pump(qapp, lambda: tab.frame.quality == "full" and tab.worker.idle())
    want = tab.orbit.camera(tab.render_size).c2w
    assert np.allclose(tab.frame.result.camera.c2w, want)
    tab.reset_view()
    settle(qapp, tab)


def test_output_selector_and_legend(qapp, tab):
    from app.scene.colorize import OUTPUTS, label_palette

    settle(qapp, tab)
    imgs = {}
    for name in OUTPUTS:
        tab.output.setCurrentText(name)
        imgs[name] = tab.view._buf.copy()
        assert imgs[name].shape == (tab.render_size, tab.render_size, 3)
    assert len({im.tobytes() for im in imgs.values()}) == len(OUTPUTS)
    lab = imgs["Semantic labels"]
    pal = label_palette(len(tab.lab.labels))
    assert np.array_equal(lab, pal[tab.frame.result.label])
    assert tab.legend.grid.count() == len(tab.lab.labels)
    tab.output.setCurrentText("RGB")


def test_best_view_shows_the_object(qapp, tab):
    tab.ask("the green ball")
    pump(qapp, lambda: tab.query_result.query == "the green ball")
    assert tab.query_result.candidates[0].label == "green ball"
    ball = tab.lab.labels.index("green ball")
    settle(qapp, tab)
    before = (tab.frame.result.label == ball).mean()
    home = tab.orbit
    tab.query_panel.best_view.click()
    pump(qapp, lambda: tab.orbit != home)
    pump(qapp, lambda: tab.worker.idle() and tab.frame.quality == "full"
         and np.allclose(tab.frame.result.camera.c2w, tab.orbit.camera(tab.render_size).c2w))
    after = (tab.frame.result.label == ball).mean()
    assert after > 0.03 and after > 5 * before  # the ball fills far more of the frame
    tab.reset_view()
    settle(qapp, tab)


@pytest.mark.slow
def test_training_runs_off_the_gui_thread_and_cancels(qapp, tab):
    t = tab.train_panel
    for field, text, err in (("iters", "0", t.iters_error), ("iters", "x", t.iters_error), ("size", "4096", t.size_error)):
        t.iters.setText("0" if text == "0" else ("x" if text == "x" else "100"))
        t.size.setText("4096" if field == "size" else "32")
        t.go.click()
        assert err.isVisible() and field in err.text() and tab.trainer is None
    lab = tab.lab
    t.iters.setText("400")
    t.size.setText("32")
    t.go.click()
    assert tab.trainer is not None and not t.go.isEnabled() and t.cancel.isEnabled()
    ticks = []
    from PySide6.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(10)
    pump(qapp, lambda: t.bar.value() >= 3, 120_000)
    assert "PSNR" in t.status.text()
    t.cancel.click()
    pump(qapp, lambda: tab.trainer is None, 120_000)
    timer.stop()
    assert "cancelled" in t.status.text() and tab.lab is lab
    assert not (tab.weights_dir / "room.weights.safetensors").exists()
    assert t.go.isEnabled() and not t.cancel.isEnabled()
    assert len(ticks) > 10  # the event loop kept turning while it trained


def test_3d_view_without_opengl_says_so_and_the_rest_works(qapp, tab):
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() != "offscreen":
        pytest.skip("runs on the offscreen platform; the child-process test covers it under a display")
    assert not tab.view3d.available and tab.view3d.gl is None
    assert "no OpenGL" in tab.view3d.notice.text()
    tab.view3d.set_path(np.zeros((3, 3)))  # setters are harmless
    tab.view3d.set_camera(tab.frame.result.camera)
    assert tab.views().keys() == {"Scene render", "Scene 3D"}


@pytest.mark.slow
def test_offscreen_child_process_degrades_the_3d_view(qapp):
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() == "offscreen":
        pytest.skip("this process is already offscreen (see the test above)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    code = ("import sys, time; from PySide6.QtWidgets import QApplication; app = QApplication([]);"
            "from app.scene import SceneTab; t = SceneTab(); t.show(); end = time.time() + 120\n"
            "while not (t.ready and t.worker.idle()) and time.time() < end: app.processEvents(); time.sleep(0.01)\n"
            "assert t.ready and not t.view3d.available and 'no OpenGL' in t.view3d.notice.text()\n"
            "t.pick_at(128, 128)\n"
            "while t.pick_result is None and time.time() < end: app.processEvents(); time.sleep(0.01)\n"
            "print('PICK', t.pick_result.label); t.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "PICK" in out.stdout


@pytest.mark.gl
def test_3d_view_draws_scene_path_and_frustum(qapp, tab, tmp_path):
    from PySide6.QtGui import QImage

    if not tab.view3d.available:
        pytest.skip(f"no OpenGL here: {tab.view3d.reason}")
    pump(qapp, lambda: "scene" in tab.view3d.items)
    assert plan(qapp, tab, "gripper", "0.05").solved
    assert {"scene", "blocked", "path", "ends", "frustum"} <= set(tab.view3d.items)
    qapp.processEvents()
    img = QImage(str(tab.export_3d_png(tmp_path / "3d.png")))
    assert not img.isNull()
    px = np.array([[img.pixelColor(x, y).red() for x in range(0, img.width(), 8)] for y in range(0, img.height(), 8)])
    assert px.std() > 5  # something was drawn, not a blank clear colour


def test_adaptive_motion_size_fits_the_frame_budget(tab):
    from app.scene.camera_control import MIN_MOTION_SIZE, MOTION_BUDGET_MS

    saved = tab._ms_per_px
    try:
        tab._ms_per_px = MOTION_BUDGET_MS / (128 * 128)  # 128 px exactly fills the budget
        assert tab.motion_size() == 128
        tab._ms_per_px = 1e-6  # fast machine: full size while moving
        assert tab.motion_size() == tab.render_size
        tab._ms_per_px = 1.0  # very slow: never below the floor
        assert tab.motion_size() == MIN_MOTION_SIZE
        tab.adaptive = False
        assert tab.motion_size() == tab.render_size
    finally:
        tab.adaptive, tab._ms_per_px = True, saved


def test_a_bad_scene_file_shows_one_line_naming_the_field(qapp, tmp_path):
    """A scene with an out-of-range size fails to load with `path: field: problem` in the
    view and the status bar, not a traceback summary from deep in the renderer."""
    from app.scene import SceneTab
    from tinyserve_core.scene.spec import load_scene

    d = json.loads(open(load_scene().path).read())
    d["objects"][3]["primitives"][0]["size"][1] = 1e300
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    t = SceneTab(scene=str(bad), weights_dir=tmp_path)
    shown = []
    t.status_message.connect(lambda msg, ms: shown.append(msg))
    t.show()
    try:
        pump(qapp, lambda: shown)
        assert shown[0] == f"scene load failed: {bad}: objects[3].primitives[0].size[1]: 1e+300 is out of range (0, 2000]"
        assert t.view.message == f"load failed: {bad}: objects[3].primitives[0].size[1]: 1e+300 is out of range (0, 2000]"
    finally:
        t.shutdown()
        t.close()
        t.deleteLater()
        qapp.processEvents()
