"""A header set every frame must not lay its window out again (a QLabel's setText does,
and in the main window that repaints every dock) nor repaint the widgets under it, yet
still wraps and grows in full."""

from __future__ import annotations

import pytest
from event_counts import layout_requests, paints
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

pytestmark = pytest.mark.gui


def _shown(qtbot, label, w: int, h: int) -> QWidget:
    """`label` at the top of a shown w x h window, the rest of it empty."""
    top = QWidget()
    qtbot.addWidget(top)
    lay = QVBoxLayout(top)
    lay.addWidget(label)
    lay.addWidget(QWidget(), 1)
    top.resize(w, h)
    top.show()
    qtbot.waitExposed(top)
    return top


@pytest.mark.parametrize("steady", [True, False])
def test_new_text_of_the_same_height_asks_no_layout(qtbot, steady):
    from app.widgets.steady_label import SteadyLabel
    label = SteadyLabel("step 1 | t = 0.10 s") if steady else QLabel("step 1 | t = 0.10 s")
    if not steady:
        label.setWordWrap(True)
    top = _shown(qtbot, label, 400, 300)
    qtbot.wait(50)                     # the requests of showing it are done
    req = layout_requests(top)
    for i in range(2, 12):
        label.setText(f"step {i} | t = {i * 0.1:.2f} s" + " x" * (i % 3))
        qtbot.wait(1)
    # the plain QLabel is the reason for the class: it asks every time
    assert (req.n == 0) if steady else (req.n > 0)


def test_text_that_needs_more_lines_is_shown_in_full(qtbot):
    from app.widgets.steady_label import SteadyLabel
    label = SteadyLabel("short")
    top = _shown(qtbot, label, 300, 400)   # (kept: the window owns the label)
    one = label.label.height()
    assert top.isVisible()
    label.setText("a much longer header that cannot fit on one line of a 300 pixel wide window " * 2)
    qtbot.waitUntil(lambda: label.height() >= label.label.heightForWidth(label.width()) > 2 * one)
    assert label.label.width() == label.width() and label.text().startswith("a much longer")


def test_a_new_text_repaints_the_label_not_its_parents(qtbot):
    """A see-through widget is painted over its parents: each new text would first have
    every ancestor (in the app: the dock, the tab, the main window) paint under it."""
    from app.widgets.steady_label import SteadyLabel
    label = SteadyLabel("step 1")
    top = _shown(qtbot, label, 400, 300)
    qtbot.wait(50)
    under, own = paints(top), paints(label.label)
    for i in range(2, 6):
        label.setText(f"step {i}")
        qtbot.wait(5)
    assert own.n > 0 and under.n == 0
