"""A wrapping line of text that changes every frame (a view's header, the timeline's
step) without laying its window out again.

QLabel.setText asks its parent layout again on every change (updateGeometry), and in a
QMainWindow that request reaches the main window's layout, which repaints the whole
window, every dock included: a time-travel scrub then paid for a 1920x1080 repaint per
frame. Qt skips that request for a widget of fixed size, so the QLabel inside is kept at
a fixed size that this container sets: the layout is asked again only when the text needs
a different height (another line).

It also fills its own background: a widget that does not is drawn over its parents, so
each new text made every ancestor up to the main window paint the label's rectangle
first (five paint events a frame in a scrub, ~2 ms of the GUI thread)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget


class SteadyLabel(QWidget):
    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.setAutoFillBackground(True)     # opaque: a new text repaints this widget only
        self.label = QLabel(text, self)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        # wrap instead of widening, like legend.flexible
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._fit()

    def text(self) -> str:
        return self.label.text()

    def setText(self, text: str) -> None:
        if text != self.label.text():
            self.label.setText(text)     # fixed size: no layout request
            self._fit()

    def setStyleSheet(self, sheet: str) -> None:
        self.label.setStyleSheet(sheet)
        self._fit()

    def _fit(self) -> None:
        w = max(1, self.width())
        h = self.label.heightForWidth(w)
        if (w, h) != (self.label.width(), self.label.height()):
            grew = h != self.label.height()
            self.label.setFixedSize(w, h)
            if grew:
                self.updateGeometry()      # another line: the layout must make room

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._fit()

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, w: int) -> int:
        return self.label.heightForWidth(max(1, w))

    def sizeHint(self) -> QSize:
        w = max(self.width(), 200)
        return QSize(200, self.heightForWidth(w))

    def minimumSizeHint(self) -> QSize:
        return QSize(40, self.fontMetrics().lineSpacing())
