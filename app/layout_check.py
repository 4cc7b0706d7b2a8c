"""`tinyserve-gui --check-layout WxH`: walk every visible label, button, input, slider
value and plot axis of the window and report text that does not fit its widget or
overlaps a sibling. Each dock is raised in turn, so docks behind a tab are checked too.
A finding is one line: where (dock > widget), what, and by how much."""

from __future__ import annotations

from PySide6.QtCore import QRectF
from PySide6.QtGui import QFontMetrics, QImage, QPainter
from PySide6.QtWidgets import (QAbstractButton, QAbstractSpinBox, QApplication, QCheckBox,
                               QComboBox, QDockWidget, QLabel, QLineEdit, QPushButton,
                               QRadioButton, QScrollArea, QWidget)

SLACK = 1          # px of rounding forgiven
# widgets the text checks look at (and whose geometries must not overlap)
_TEXT_TYPES = (QLabel, QAbstractButton, QAbstractSpinBox, QComboBox)


def _where(w: QWidget) -> str:
    dock, parts = None, []
    p = w
    while p is not None:
        if isinstance(p, QDockWidget):
            dock = p.windowTitle()
            break
        p = p.parentWidget()
    name = w.objectName() or type(w).__name__
    text = _text(w)
    parts.append(f"{name} {text[:40]!r}" if text else name)
    return f"{dock or 'window'} > " + " ".join(parts)


def _text(w: QWidget) -> str:
    if isinstance(w, (QLabel, QAbstractButton, QLineEdit)):
        return w.text()
    if isinstance(w, QAbstractSpinBox):
        return w.text()
    if isinstance(w, QComboBox):
        return w.currentText()
    return ""


def _label(w: QLabel) -> str | None:
    if not w.text() or w.pixmap() is not None and not w.pixmap().isNull():
        return None
    if w.wordWrap():
        need = w.heightForWidth(w.width())
        if need > w.height() + SLACK:
            return f"wrapped text needs {need} px of height, has {w.height()}"
        return None
    need = w.sizeHint().width()
    if need > w.width() + SLACK:
        return f"text needs {need} px, has {w.width()}"
    return None


def _button(w: QAbstractButton) -> str | None:
    text = w.text().replace("&&", "\0").replace("&", "").replace("\0", "&")
    if not text:
        return None
    fm = QFontMetrics(w.font())
    extra = 20 if isinstance(w, (QCheckBox, QRadioButton)) else 8 if isinstance(w, QPushButton) else 4
    if not w.icon().isNull():
        extra += w.iconSize().width() + 4
    need = fm.horizontalAdvance(text) + extra
    return f"text needs {need} px, has {w.width()}" if need > w.width() + SLACK else None


def _edit_text(w: QWidget, text: str, room: int) -> str | None:
    if not text:
        return None
    need = QFontMetrics(w.font()).horizontalAdvance(text) + 4
    return f"value {text!r} needs {need} px, has {room}" if need > room + SLACK else None


def _spin(w: QAbstractSpinBox) -> str | None:
    le = w.findChild(QLineEdit)
    return _edit_text(w, w.text(), le.width() if le is not None else w.width() - 20)


def _combo(w: QComboBox) -> str | None:
    return _edit_text(w, w.currentText(), w.width() - 28)


def _slider_value(w: QLineEdit) -> str | None:
    """superqt's labeled sliders show their value in a SliderLabel (a QLineEdit)."""
    return _edit_text(w, w.text(), w.width() - 2)


def _check_widget(w: QWidget) -> str | None:
    if isinstance(w, QLabel):
        return _label(w)
    if isinstance(w, QAbstractButton):
        return _button(w)
    if isinstance(w, QAbstractSpinBox):
        return _spin(w)
    if isinstance(w, QComboBox):
        return _combo(w)
    if isinstance(w, QLineEdit) and type(w).__name__ == "SliderLabel":
        return _slider_value(w)
    return None


def _overlaps(w: QWidget) -> list[str]:
    """Text widgets of one parent whose rectangles cross (a sibling drawn over text)."""
    out = []
    sibs = [c for c in w.children() if isinstance(c, _TEXT_TYPES) and c.isVisible()
            and c.width() > 0 and c.height() > 0]
    for i, a in enumerate(sibs):
        for b in sibs[i + 1:]:
            r = a.geometry().intersected(b.geometry())
            if r.width() > 2 and r.height() > 2:
                out.append(f"{_where(a)}: overlaps {_where(b)} by {r.width()}x{r.height()} px")
    return out


def _scroll(w: QScrollArea) -> str | None:
    inner = w.widget()
    if inner is None:
        return None
    need = inner.minimumSizeHint().width()
    room = w.viewport().width()
    return f"content needs {need} px of width, the view has {room}" if need > room + SLACK else None


# ---- plots --------------------------------------------------------------------------
def _axis_findings(ax, where: str) -> list[str]:
    """Tick labels that overlap each other or leave the axis; a cut axis title."""
    out = []
    if not ax.isVisible() or ax.width() < 2 or ax.height() < 2:
        return out
    img = QImage(8, 8, QImage.Format.Format_ARGB32)
    p = QPainter(img)
    try:
        specs = ax.generateDrawSpecs(p)
    finally:
        p.end()
    if specs is None:
        return out
    rects = [QRectF(r) for r, _, _ in specs[2]]
    texts = [t for _, _, t in specs[2]]
    vertical = ax.orientation in ("left", "right")
    bounds = QRectF(0, 0, ax.width(), ax.height())
    for i, r in enumerate(rects):
        for j in range(i + 1, len(rects)):
            o = r.intersected(rects[j])
            if o.width() > 1 and o.height() > 1:
                out.append(f"{where}: {ax.orientation} axis labels {texts[i]!r} and {texts[j]!r} overlap")
        if vertical and (r.left() < -SLACK or r.right() > bounds.right() + SLACK):
            out.append(f"{where}: {ax.orientation} axis label {texts[i]!r} is {r.width():.0f} px wide, "
                       f"the axis {bounds.width():.0f}")
    if getattr(ax, "autoSIPrefixScale", 1.0) != 1.0:
        out.append(f"{where}: {ax.orientation} axis shows its values scaled "
                   f"(x{ax.autoSIPrefixScale:g}) instead of plain numbers")
    if ax.label.isVisible() and ax.labelText:
        lw = ax.label.boundingRect().width()
        room = ax.height() if vertical else ax.width()
        if lw > room + SLACK:
            out.append(f"{where}: {ax.orientation} axis title {ax.label.toPlainText().strip()!r} "
                       f"needs {lw:.0f} px, has {room:.0f}")
    return out


def _plot_findings(plot, where: str) -> list[str]:
    out = []
    t = plot.titleLabel
    if t.isVisible() and t.text:
        need = t.item.boundingRect().width()
        if need > plot.width() + SLACK:
            out.append(f"{where}: title needs {need:.0f} px, the plot has {plot.width():.0f}")
    leg = plot.legend
    if leg is not None and leg.isVisible() and leg.scene() is not None:
        lr = leg.sceneBoundingRect()
        vr = plot.vb.sceneBoundingRect()
        if lr.intersects(vr) and len(leg.items):
            out.append(f"{where}: legend drawn over the data")
    return out


def _graphics(view, where: str) -> list[str]:
    import pyqtgraph as pg
    out = []
    room = QRectF(view.mapToScene(view.viewport().rect()).boundingRect())
    for item in view.scene().items():
        if not item.isVisible():
            continue
        if isinstance(item, pg.AxisItem):
            out += _axis_findings(item, where)
        elif isinstance(item, pg.PlotItem):
            out += _plot_findings(item, where)
            r = item.sceneBoundingRect()
            # a title or axis wider than the view stretches the plot past its edge
            if r.right() > room.right() + SLACK or r.bottom() > room.bottom() + SLACK:
                out.append(f"{where}: plot is {r.width():.0f}x{r.height():.0f} px, "
                           f"the view {room.width():.0f}x{room.height():.0f}: its edge is cut")
    return out


def check_widget_tree(root: QWidget) -> list[str]:
    import pyqtgraph as pg
    out = []
    for w in [root, *root.findChildren(QWidget)]:
        if not w.isVisible() or w.width() <= 0:
            continue
        problem = _check_widget(w)
        if problem:
            out.append(f"{_where(w)}: {problem}")
        if isinstance(w, QScrollArea):
            problem = _scroll(w)
            if problem:
                out.append(f"{_where(w)}: {problem}")
        if isinstance(w, pg.GraphicsView):
            out += _graphics(w, _where(w))
        out += _overlaps(w)
    return out


def check_window(win) -> list[str]:
    """Every finding of the window, each dock raised in turn; sorted, no repeats."""
    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()
    found: list[str] = []
    docks = [d for d in win.findChildren(QDockWidget) if d.toggleViewAction().isChecked()]
    for d in docks:
        d.raise_()
        for _ in range(3):
            app.processEvents()
        if hasattr(win, "serving"):
            win.serving.render_all()
            app.processEvents()
        found += check_widget_tree(d)
    found += check_widget_tree(win)
    seen, out = set(), []
    for f in found:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out

