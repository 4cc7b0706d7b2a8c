"""File > Attach...: what to watch. Live endpoints (the flags of `tinyserve attach`) or
a recording; remembered in QSettings; a bad field gets its message under it and the
dialog stays open (validated by AttachSpec, the same rules as the CLI)."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from tinyserve_core.errors import ConfigError

from .spec import AttachSpec, split_urls

SETTINGS_KEY = "attach/spec"
# ConfigError fields -> the row that shows them
ROWS = ("kv_events", "data_parallel_size", "replay", "topic", "bind", "metrics_url", "tokenizer",
        "recording", "speed")


def saved_spec(settings: QSettings) -> AttachSpec:
    return AttachSpec.from_json(settings.value(SETTINGS_KEY))


class AttachDialog(QDialog):
    def __init__(self, settings: QSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Attach to a vLLM / SGLang server")
        self.settings = settings
        self.spec: AttachSpec | None = None
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        self.kv_events = QLineEdit()
        self.kv_events.setPlaceholderText("tcp://127.0.0.1:5557  (several: separate with spaces)")
        self.dp = QSpinBox()
        self.dp.setRange(1, 256)
        self.replay = QLineEdit()
        self.replay.setPlaceholderText("tcp://127.0.0.1:5558  (paired with the endpoints in order)")
        self.topic = QLineEdit()
        self.topic.setPlaceholderText("empty: every topic")
        self.bind = QCheckBox("bind (the server connects: its endpoint names a concrete host)")
        self.metrics = QLineEdit()
        self.metrics.setPlaceholderText("http://127.0.0.1:8000/metrics  (several: spaces)")
        self.tokenizer = self._with_browse(QLineEdit(), "Tokenizer folder", folder=True)
        self.recording = self._with_browse(QLineEdit(), "KV-event recording", folder=False)
        self.speed = QDoubleSpinBox()
        self.speed.setRange(0.0, 1000.0)
        self.speed.setDecimals(1)
        self.speed.setSuffix(" x real time (0 = as fast as possible)")
        for key, label, w in (
                ("kv_events", "KV-event endpoints", self.kv_events),
                ("data_parallel_size", "data-parallel ranks", self.dp),
                ("replay", "replay endpoints", self.replay),
                ("topic", "topic", self.topic),
                ("bind", "", self.bind),
                ("metrics_url", "metrics URLs", self.metrics),
                ("tokenizer", "tokenizer folder", self.tokenizer),
                ("recording", "or play a recording", self.recording),
                ("speed", "playback speed", self.speed)):
            form.addRow(label, self._with_error(key, w))
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Each endpoint is one server; with N data-parallel ranks, rank r "
                             "publishes on port + r (vLLM's rule)."))
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Attach")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.set_spec(saved_spec(settings))

    def _with_browse(self, edit: QLineEdit, title: str, folder: bool) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit, 1)
        b = QPushButton("Browse...")

        def browse():
            p = (QFileDialog.getExistingDirectory(self, title) if folder
                 else QFileDialog.getOpenFileName(self, title)[0])
            if p:
                edit.setText(p)
        b.clicked.connect(browse)
        h.addWidget(b)
        w.edit = edit
        return w

    def _with_error(self, key: str, w: QWidget) -> QWidget:
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(1)
        v.addWidget(w)
        err = QLabel("")
        err.setStyleSheet("color: #ff6060;")
        err.setWordWrap(True)
        err.setVisible(False)
        v.addWidget(err)
        self.errors[key] = err
        return box

    def set_spec(self, s: AttachSpec) -> None:
        self.kv_events.setText(" ".join(s.kv_events))
        self.dp.setValue(s.data_parallel_size)
        self.replay.setText(" ".join(s.replay))
        self.topic.setText(s.topic)
        self.bind.setChecked(s.bind)
        self.metrics.setText(" ".join(s.metrics_urls))
        self.tokenizer.edit.setText(s.tokenizer)
        self.recording.edit.setText(s.recording)
        self.speed.setValue(s.speed)

    def read_spec(self) -> AttachSpec:
        return AttachSpec(
            kv_events=split_urls(self.kv_events.text()), data_parallel_size=self.dp.value(),
            replay=split_urls(self.replay.text()), topic=self.topic.text(), bind=self.bind.isChecked(),
            metrics_urls=split_urls(self.metrics.text()), tokenizer=self.tokenizer.edit.text().strip(),
            recording=self.recording.edit.text().strip(), speed=self.speed.value())

    def error_text(self, key: str) -> str:
        return self.errors[key].text()

    def validate(self) -> AttachSpec | None:
        """The spec, or None with the message under the field it names."""
        for lab in self.errors.values():
            lab.setVisible(False)
            lab.setText("")
        spec = self.read_spec()
        try:
            spec.validate()
        except ConfigError as e:
            lab = self.errors.get(e.field, self.errors["kv_events"])
            lab.setText(e.message)
            lab.setVisible(True)
            return None
        return spec

    def accept(self) -> None:
        spec = self.validate()
        if spec is None:
            return
        self.spec = spec
        self.settings.setValue(SETTINGS_KEY, spec.to_json())
        self.settings.sync()
        super().accept()
