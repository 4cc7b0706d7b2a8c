"""Colour keys and labels that never force a view wider than its dock."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QSizePolicy

from .palette import BACKGROUND_RGB, rgb_css


def swatch_html(rgb, text: str) -> str:
    r, g, b = (int(c) for c in rgb[:3])
    return (f'<span style="background-color: rgb({r},{g},{b}); color: rgb({r},{g},{b});">'
            f'&nbsp;&nbsp;&nbsp;</span>&nbsp;{text}')


def flexible(label: QLabel) -> QLabel:
    """Wrap instead of widening: a long status line must not set the window's width."""
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
    return label


class ColourLegend(QLabel):
    """Swatches and names in one wrapping line, on the plots' dark ground (a white
    swatch must stay visible)."""

    def __init__(self, items: list[tuple[tuple[int, int, int], str]], parent=None):
        super().__init__(parent)
        self.setStyleSheet("background-color: %s; color: #dcdce4; padding: 3px;" % rgb_css(BACKGROUND_RGB))
        self.setText("&nbsp;&nbsp; ".join(swatch_html(rgb, text) for rgb, text in items))
        self.setToolTip(", ".join(text for _, text in items))
        flexible(self)
