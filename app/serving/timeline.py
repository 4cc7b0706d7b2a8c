"""The timeline under the views: a slider over every step the history holds. Dragging it
(or the arrow keys, or play) picks a past step; "Live" (End or L) follows the engine again.

The widget only says which step is wanted (`step_changed`, -1 = live); the time-travel
controller (time_travel.py) makes every view show it."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox, QWidget

PLAY_MS = 50          # 20 steps/s: slow enough to follow blocks change


class TimelineWidget(QWidget):
    step_changed = Signal(int)          # the step to show; -1 = live

    def __init__(self, parent=None):
        super().__init__(parent)
        # opaque: the slider, step label and go-to box change every frame of a drag, and a
        # see-through widget repaints every ancestor under them first (up to the window)
        self.setAutoFillBackground(True)
        self.first, self.last = 0, 0
        self.cursor = -1                 # -1 = live
        self._direction = 0
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 0, 2, 0)
        self.back_btn = QPushButton("\u25c0")
        self.fwd_btn = QPushButton("\u25b6")
        self.live_btn = QPushButton("Live")
        for b, tip in ((self.back_btn, "play the history backward (again: stop)"),
                       (self.fwd_btn, "play forward to the present (again: stop)"),
                       (self.live_btn, "back to live: follow the engine again (End or L)")):
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for b in (self.back_btn, self.fwd_btn):   # glyph buttons: the slider gets the width
            b.setFixedWidth(b.fontMetrics().horizontalAdvance("\u25a0") + 22)
        # sized for its word, not the style's 80 px minimum: with the go-to box sized for
        # any step, the row must still let the window fit 1280 px with every dock shown
        self.live_btn.setFixedWidth(self.live_btn.fontMetrics().horizontalAdvance("Live") + 28)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("drag to any past step: every view shows that step")
        self.label = QLabel("live")
        # a fixed size: its text changes every frame of a drag, and a label whose size
        # may change asks the window's layout again each time (a whole-window repaint)
        fm = self.label.fontMetrics()
        # (the widest text it shows: "step N / M"; "live: step N" is shorter)
        self.label.setFixedSize(fm.horizontalAdvance("step 0000000 / 0000000") + 4,
                                self.label.sizeHint().height())
        self.slider.setMinimumWidth(90)    # the window must fit 1280 px with every dock shown
        self.setToolTip("time travel: drag to a past step; End or L returns to live")
        lay.addWidget(self.back_btn)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.fwd_btn)
        lay.addWidget(self.label)
        # a step from a Perfetto slice (args.step) typed in: the same numbering
        self.goto = QSpinBox()
        self.goto.setRange(0, 0)
        self.goto.setKeyboardTracking(False)
        self.goto.setPrefix("go to ")
        self.goto.setToolTip("type a step (a trace slice's args.step) and press Enter")
        # a fixed size, wide enough for any step: its range grows with every snapshot,
        # and QSpinBox.setRange asks the window's layout again each time (a whole-window
        # repaint per snapshot) unless the box's size cannot change
        self.goto.setRange(0, 9_999_999)
        self.goto.setFixedSize(self.goto.sizeHint())
        self.goto.setRange(0, 0)
        self.goto.editingFinished.connect(lambda: self.seek(self.goto.value()))
        lay.addWidget(self.goto)
        lay.addWidget(self.live_btn)
        self.timer = QTimer(self)
        self.timer.setInterval(PLAY_MS)
        self.timer.timeout.connect(self._tick)
        self.slider.valueChanged.connect(self._on_slider)
        self._pending: int | None = None
        self._coalesce = QTimer(self)
        self._coalesce.setSingleShot(True)
        self._coalesce.setInterval(0)
        self._coalesce.timeout.connect(self._flush_drag)
        self.slider.sliderReleased.connect(self._flush_drag)
        self.back_btn.clicked.connect(lambda: self.play(-1))
        self.fwd_btn.clicked.connect(lambda: self.play(+1))
        self.live_btn.clicked.connect(self.go_live)
        self._setting = False
        self._update_label()

    @property
    def live(self) -> bool:
        return self.cursor < 0

    def set_range(self, first: int, last: int) -> None:
        """The steps the history holds; live keeps the handle at the newest."""
        self.first, self.last = first, last
        self._setting = True
        try:
            self.slider.setRange(first, last)
            self.goto.setRange(first, last)
            if self.live:
                self.slider.setValue(last)
            elif self.cursor < first:     # the history dropped the step being shown
                self.slider.setValue(first)
                self.cursor = first
                self.step_changed.emit(first)
        finally:
            self._setting = False
        self._update_label()

    def seek(self, step: int) -> None:
        """Show `step` (clipped to the history); the newest step is still a past view."""
        step = max(self.first, min(self.last, int(step)))
        if step == self.cursor:
            return
        self.cursor = step
        self._setting = True
        self.slider.setValue(step)
        self._setting = False
        self._update_label()
        self.step_changed.emit(step)

    def go_live(self) -> None:
        self._pending = None     # a drag's last move must not take it back to the past
        self.play(0)
        if self.live:
            return
        self.cursor = -1
        self._setting = True
        self.slider.setValue(self.last)
        self._setting = False
        self._update_label()
        self.step_changed.emit(-1)

    def play(self, direction: int) -> None:
        """+1 forward, -1 backward, 0 stop; pressing the same direction again stops."""
        if direction == self._direction or direction == 0:
            self._direction = 0
            self.timer.stop()
        else:
            self._direction = direction
            if self.live:
                if direction > 0:
                    return
                self.seek(self.last)
            self.timer.start()
        self.back_btn.setText("\u25a0" if self._direction < 0 else "\u25c0")
        self.fwd_btn.setText("\u25a0" if self._direction > 0 else "\u25b6")

    def _tick(self) -> None:
        nxt = self.cursor + self._direction
        if self._direction > 0 and nxt > self.last:
            self.go_live()                # played up to the present: live again
        elif self._direction < 0 and nxt < self.first:
            self.play(0)
        else:
            self.seek(nxt)

    def _on_slider(self, value: int) -> None:
        if self._setting:
            return
        if self.slider.isSliderDown():
            # a drag: the newest position wins, shown once the queued moves are handled,
            # so a slow frame never leaves a backlog of steps to show
            self._pending = value
            self._coalesce.start()
            return
        self.seek(value)

    def _flush_drag(self) -> None:
        if self._pending is not None:
            step, self._pending = self._pending, None
            self.seek(step)

    def _update_label(self) -> None:
        if not self.goto.hasFocus():     # never under the user's typing
            self.goto.setValue(self.last if self.live else self.cursor)
        if self.live:
            self.label.setText(f"live: step {self.last}")
        else:
            self.label.setText(f"step {self.cursor} / {self.last}")
        self.live_btn.setEnabled(not self.live)
