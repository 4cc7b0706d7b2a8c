"""A row of colour swatches with names: the key to a view's colours."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget


def swatch_html(rgb, text: str) -> str:
    r, g, b = (int(c) for c in rgb[:3])
    return (f'<span style="background-color: rgb({r},{g},{b}); color: rgb({r},{g},{b});">'
            f'&nbsp;&nbsp;&nbsp;</span>&nbsp;{text}')


class ColourLegend(QWidget):
    def __init__(self, items: list[tuple[tuple[int, int, int], str]], parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        lay.setSpacing(10)
        for rgb, text in items:
            lab = QLabel(swatch_html(rgb, text))
            lab.setToolTip(text)
            lay.addWidget(lab)
        lay.addStretch(1)
