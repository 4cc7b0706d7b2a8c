"""The Scene tab's side panel: pick read-out, query box with history, plan settings and
result, training controls, exports. Widgets only; the tab wires them."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from app.widgets.legend import swatch_html

ERROR_STYLE = "color: #e0473c;"


class FieldError(QLabel):
    """The message shown right under a field with a bad value; hidden when it is fine."""

    def __init__(self):
        super().__init__()
        self.setStyleSheet(ERROR_STYLE)
        self.setWordWrap(True)
        self.hide()

    def show_error(self, text: str) -> None:
        self.setText(text)
        self.setVisible(bool(text))


def _with_error(form: QFormLayout, name: str, w: QWidget) -> FieldError:
    err = FieldError()
    form.addRow(name, w)
    form.addRow("", err)
    return err


def _button_row(form: QFormLayout, *buttons: QPushButton) -> None:
    """The action buttons of a panel side by side, as one row of its form."""
    row = QHBoxLayout()
    for b in buttons:
        row.addWidget(b)
    form.addRow(row)


def _readout() -> QLabel:
    lab = QLabel()
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


class QueryPanel(QGroupBox):
    def __init__(self):
        super().__init__("Query")
        lay = QVBoxLayout(self)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText('e.g. "the red mug", "something to read"; Enter')
        self.edit.setClearButtonEnabled(True)
        self.error = FieldError()
        self.status = _readout()
        self.best_view = QPushButton("Jump to best view")
        self.best_view.setEnabled(False)
        self.history = QListWidget()
        self.history.setMaximumHeight(110)
        self.history.setToolTip("double-click to ask again")
        for w in (self.edit, self.error, self.status, self.best_view, QLabel("History"), self.history):
            lay.addWidget(w)


class PlanPanel(QGroupBox):
    def __init__(self):
        super().__init__("Plan a path")
        form = QFormLayout(self)
        self.target = QComboBox()
        self.robot = QComboBox()
        self.robot.addItems(["ground", "gripper"])
        self.radius = QLineEdit("0.12")
        self.planner = QComboBox()
        self.planner.addItems(["rrtconnect", "rrtstar"])
        self.target_error = _with_error(form, "Target", self.target)
        form.addRow("Robot", self.robot)
        self.radius_error = _with_error(form, "Radius (m)", self.radius)
        self.planner_error = _with_error(form, "Planner", self.planner)
        self.go = QPushButton("Plan")
        self.clear = QPushButton("Clear path")
        _button_row(form, self.go, self.clear)
        self.result = _readout()
        form.addRow(self.result)


class TrainPanel(QGroupBox):
    def __init__(self):
        super().__init__("Train the scene")
        form = QFormLayout(self)
        self.iters = QLineEdit("1500")
        self.size = QLineEdit("128")
        self.iters_error = _with_error(form, "Steps", self.iters)
        self.size_error = _with_error(form, "Image side", self.size)
        self.go = QPushButton("Train")
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        _button_row(form, self.go, self.cancel)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        form.addRow(self.bar)
        self.status = _readout()
        form.addRow(self.status)
        self.preview = QLabel()
        self.preview.setFixedSize(128, 128)
        self.preview.setStyleSheet("background: #1c1d21; color: #888;")
        self.preview.setScaledContents(True)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setText("the field's view\nappears here\nwhile it trains")
        form.addRow("Preview", self.preview)


class ExportPanel(QGroupBox):
    def __init__(self):
        super().__init__("Export")
        grid = QGridLayout(self)
        self.render_png = QPushButton("Render PNG")
        self.view3d_png = QPushButton("3D view PNG")
        self.path_json = QPushButton("Path JSON")
        self.path_csv = QPushButton("Path CSV")
        self.query_log = QPushButton("Query log")
        for i, b in enumerate((self.render_png, self.view3d_png, self.path_json, self.path_csv, self.query_log)):
            grid.addWidget(b, i // 2, i % 2)
        self.status = _readout()
        grid.addWidget(self.status, 3, 0, 1, 2)


class LabelLegend(QWidget):
    """Swatches of the semantic-label palette in a few columns (the key to the label view
    and to the colours of highlighted boxes)."""

    def __init__(self, columns: int = 5):
        super().__init__()
        self.columns = columns
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(4, 2, 4, 2)
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(2)

    def set_labels(self, labels: list[str], palette) -> None:
        while self.grid.count():
            self.grid.takeAt(0).widget().deleteLater()
        for i, (name, rgb) in enumerate(zip(labels, palette)):
            self.grid.addWidget(QLabel(swatch_html(rgb, name)), i // self.columns, i % self.columns)
