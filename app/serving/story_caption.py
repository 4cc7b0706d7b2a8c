"""The "what you are seeing" caption above the pool: names each part of the memory story
(story.py) the first time it happens; dismissable, and it stays dismissed."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton

from .story import BEATS, Beat


class StoryCaption(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("story_caption")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#story_caption { background: #23303a; border: 1px solid #4a6478; }")
        self.dismissed = False
        self.beats: list[Beat] = []
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 3, 3, 3)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.text, 1)
        self.close_btn = QToolButton()
        self.close_btn.setText("\u2715")
        self.close_btn.setToolTip("hide this caption")
        self.close_btn.clicked.connect(self.dismiss)
        lay.addWidget(self.close_btn, 0, Qt.AlignmentFlag.AlignTop)
        self.setVisible(False)

    def add(self, beats: list[Beat]) -> None:
        if not beats:
            return
        self.beats.extend(beats)
        b = self.beats[-1]
        seen = ", ".join(x.title.lower() for x in self.beats[:-1])
        self.text.setText(
            f"<b>What you are seeing</b> ({len(self.beats)} of {len(BEATS)}) \u2014 "
            f"<b>{b.title}</b> at step {b.step}: {b.text}"
            + (f"<br><span style='color:#9ab'>seen so far: {seen}</span>" if seen else ""))
        if not self.dismissed:
            self.setVisible(True)

    def reset(self) -> None:
        self.beats = []
        self.text.setText("")
        self.setVisible(False)

    def dismiss(self) -> None:
        self.dismissed = True
        self.setVisible(False)
