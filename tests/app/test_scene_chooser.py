"""The Scene tab's scene chooser and `tinyserve-gui --scene`: switching from the room to the
apartment and back reloads the lab, the legend, the plan targets and the frame, and a
query answers from the scene now shown; a switch during training is refused."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def pump(app, pred, timeout_s=120):
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("the Scene tab did not get there in time")
        app.processEvents()
        time.sleep(0.005)


def _ready_on(tab, name: str) -> bool:
    return tab.ready and tab.lab.spec.name == name and tab.worker.idle()


def test_chooser_switches_scenes_and_back(qapp, tmp_path):
    from app.scene import SceneTab

    tab = SceneTab(weights_dir=tmp_path)
    tab.resize(1280, 800)
    tab.show()
    try:
        pump(qapp, lambda: _ready_on(tab, "room"))
        box = tab.scene_box
        names = [box.itemText(i) for i in range(box.count())]
        assert {"room", "apartment"} <= set(names) and box.currentText() == "room" and box.isEnabled()
        tab.ask("the red mug")
        pump(qapp, lambda: tab.query_result is not None and "query" not in tab._pending)

        box.activated.emit(names.index("apartment"))  # what a user's pick in the combo box sends
        assert tab.lab is None and not box.isEnabled() and tab.query_result is None
        pump(qapp, lambda: _ready_on(tab, "apartment"))
        assert box.currentText() == "apartment" and box.isEnabled()
        targets = [tab.plan_panel.target.itemText(i) for i in range(tab.plan_panel.target.count())]
        assert "fridge" in targets and "red mug" not in targets
        assert tab.legend.grid.count() == len(tab.lab.labels)
        # the frame shown is the apartment's: its classes appear in the render
        seen = {tab.lab.labels[k] for k in np.unique(tab.frame.result.label)}
        assert {"sofa", "fridge"} <= seen
        tab.ask("the chair in the kitchen")
        pump(qapp, lambda: tab.query_result is not None and "query" not in tab._pending)
        assert sorted(c.label for c in tab.query_result.candidates) == ["blue chair", "wooden chair"]

        tab.trainer = object()  # a run in progress: the switch is refused and the box says so
        try:
            assert tab.choose_scene("room") is False
            assert box.currentText() == "apartment" and tab.lab.spec.name == "apartment"
        finally:
            tab.trainer = None

        box.activated.emit(names.index("room"))
        pump(qapp, lambda: _ready_on(tab, "room"))
        assert "red mug" in [tab.plan_panel.target.itemText(i) for i in range(tab.plan_panel.target.count())]
    finally:
        tab.shutdown()
        tab.close()
        tab.deleteLater()
        qapp.processEvents()


def test_scene_chosen_before_the_tab_starts_is_the_one_loaded(qapp, tmp_path):
    from app.scene import SceneTab

    tab = SceneTab(weights_dir=tmp_path)
    assert tab.choose_scene("apartment") and tab.lab is None and tab.worker is None  # nothing loads yet
    tab.show()
    try:
        pump(qapp, lambda: _ready_on(tab, "apartment"))
    finally:
        tab.shutdown()
        tab.close()
        tab.deleteLater()
        qapp.processEvents()


def test_gui_refuses_an_unknown_scene_in_one_line(capsys):
    from app.main import main

    assert main(["--scene", "nowhere", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyserve-gui: scene: unknown scene 'nowhere'") and "apartment" in err
    assert "\n" not in err


def test_gui_scene_flag_reaches_the_scene_tab(qapp, tmp_path):
    from types import SimpleNamespace

    from PySide6.QtWidgets import QTabWidget, QWidget

    from app.main import _choose_scene, parse_args
    from app.scene import SceneTab

    assert parse_args(["--scene", "apartment"]).scene == "apartment"
    tabs = QTabWidget()
    scene_tab = SceneTab(weights_dir=tmp_path)
    tabs.addTab(QWidget(), "Serving")
    tabs.addTab(scene_tab, "Scene")
    _choose_scene(SimpleNamespace(tabs=tabs), "apartment")
    assert scene_tab.scene == "apartment" and scene_tab.scene_box.currentText() == "apartment"
    tabs.deleteLater()
