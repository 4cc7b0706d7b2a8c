"""GUI tests run on Qt's offscreen platform when there is no display (under Xvfb in
`make test` there is one)."""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QCoreApplication, Qt

# As the app does (app/main.py): every GL view shares one context group, so pyqtgraph's
# shader programs, compiled once per process, stay valid in a view made after another
# was destroyed (the scene chooser test builds and drops a second Scene tab).
QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


@pytest.fixture
def gui_config(tiny_model_dir):
    from tinyserve_core.engine.config import EngineConfig

    def make(**kw):
        base = {"model": str(tiny_model_dir), "device": "cpu", "block_size": 4, "num_blocks": 256,
                "requests": 6, "rate": 50.0, "prompt_len": 12, "prompt_len_max": 24,
                "prompt_dist": "uniform", "output_len": 8, "output_len_max": 12,
                "output_dist": "uniform", "max_num_seqs": 8, "temperature": 1.0}
        base.update(kw)
        return EngineConfig.from_dict(base)
    return make


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings
    return QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, settings):
    """A MainWindow whose engine is built and paused; frames are driven by the test."""
    from app.main_window import MainWindow
    from app.workers import default_simulation_factory

    made = []

    def make(config, factory=default_simulation_factory, manual_frames=True, mode="process"):
        w = MainWindow(config, factory=factory, settings=settings, restore_layout=False,
                       engine_mode=mode, extra_tabs=False)
        qtbot.addWidget(w)
        w.serving.show_error_dialogs = False
        if manual_frames:
            w.serving.timer.stop()
        w.show()
        made.append(w)
        qtbot.waitUntil(lambda: w.serving.worker.state in ("paused", "error"), timeout=90000)
        return w

    yield make
    for w in made:
        w.serving.shutdown()
