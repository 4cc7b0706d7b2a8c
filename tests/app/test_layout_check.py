"""`tinyserve-gui --check-layout WxH`: the checker finds clipped text, overlaps, stacked
tick labels and legends over data; the real window is clean at 1280x720, 1600x1000
and 1920x1080."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.layout_check import check_widget_tree
from app.main import main

pytestmark = pytest.mark.gui


def _shown(qtbot, w, size=(400, 300)):
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_roomy_widgets_are_clean(qtbot):
    w = QWidget()
    v = QVBoxLayout(w)
    v.addWidget(QLabel("short"))
    v.addWidget(QPushButton("OK"))
    _shown(qtbot, w)
    assert check_widget_tree(w) == []


def test_clipped_label_and_button_are_found(qtbot):
    w = QWidget()
    lab = QLabel("a label far too long for the thirty pixels it is given", w)
    lab.setGeometry(0, 0, 30, 20)
    btn = QPushButton("a button with a long name", w)
    btn.setGeometry(0, 40, 40, 24)
    wrap = QLabel("wrapped text " * 20, w)
    wrap.setWordWrap(True)
    wrap.setGeometry(0, 80, 100, 20)
    _shown(qtbot, w)
    found = "\n".join(check_widget_tree(w))
    assert "a label far too long" in found and "text needs" in found
    assert "a button with a long" in found
    assert "wrapped text needs" in found


def test_overlapping_siblings_are_found(qtbot):
    w = QWidget()
    QLabel("first", w).setGeometry(0, 0, 100, 20)
    QLabel("second", w).setGeometry(50, 5, 100, 20)
    _shown(qtbot, w)
    assert any("overlaps" in f for f in check_widget_tree(w))


def test_slider_value_that_does_not_fit_is_found(qtbot):
    from superqt import QLabeledSlider
    w = QWidget()
    h = QHBoxLayout(w)
    s = QLabeledSlider()
    s.setRange(0, 10**9)
    s.setValue(10**9)
    h.addWidget(s)
    _shown(qtbot, w, (400, 300))
    label = s._label
    label.setFixedWidth(12)     # what a squeezed dock did to the arrival rate
    qtbot.wait(50)
    assert any("SliderLabel" in f and "needs" in f for f in check_widget_tree(w))


def test_stacked_tick_labels_and_legend_over_data_are_found(qtbot):
    pw = pg.PlotWidget()
    p = pw.getPlotItem()
    p.addLegend()
    p.plot([0, 1], [0, 1], name="curve")
    p.getAxis("left").setTicks([[(v / 10, f"{v / 10:.1f}") for v in range(11)]])
    _shown(qtbot, pw, (300, 80))
    found = "\n".join(check_widget_tree(pw))
    assert "labels" in found and "overlap" in found
    assert "legend drawn over the data" in found


def test_si_scaled_empty_axis_is_found(qtbot):
    pw = pg.PlotWidget()
    pw.getPlotItem().setLabel("left", "page")
    pw.getPlotItem().setYRange(-0.0004, 0.0004)
    _shown(qtbot, pw, (300, 300))
    assert any("scaled" in f for f in check_widget_tree(pw))


def test_plot_pushed_past_its_view_is_found(qtbot):
    glw = pg.GraphicsLayoutWidget()
    glw.addPlot(title="a title far too long for the little view it has been given, cut")
    _shown(qtbot, glw, (200, 200))
    assert any("its edge is cut" in f for f in check_widget_tree(glw))


@pytest.mark.parametrize("size", ["1280x720", "1600x1000", "1920x1080"])
def test_window_layout_is_clean(size, gui_config, tmp_path, qapp, capsys):
    cfg = gui_config(n=2, stats=True, policy="quest", budget=8, requests=12)
    cfg.save(tmp_path / "cfg.json")
    rc = main(["--offscreen", "--config", str(tmp_path / "cfg.json"), "--steps", "12",
               "--check-layout", size])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"layout at {size}: clean" in out.out
