"""The settings panel: one row per EngineConfig flat key, each with its unit and range and a
message line under it. Every change is validated through EngineConfig (the same code
the CLI uses); a ConfigError puts its message next to the field it names and the
widget goes back to the value in force. Restart keys ask first and then rebuild the
engine; everything else is sent live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QGridLayout, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)
from superqt import QLabeledDoubleSlider, QLabeledSlider

from ..widgets.palette import ERROR_CSS, HINT_CSS
from tinyserve_core.engine.config import KV_CACHE_DTYPES, POLICIES, RESTART_KEYS, EngineConfig
from tinyserve_core.errors import ConfigError


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    kind: str            # "int" | "float" | "spin" | "dspin" | "choice" | "bool" | "path"
    lo: float = 0
    hi: float = 1
    unit: str = ""
    choices: tuple = ()
    tip: str = ""


FIELDS = (
    Field("model", "model folder", "path", tip="Hugging Face checkpoint folder; empty = the shipped model"),
    Field("block_size", "block size", "choice", unit="tokens/block",
          choices=(1, 2, 4, 8, 16, 32, 64, 128)),
    Field("num_blocks", "number of blocks", "spin", 1, 1 << 20, "blocks"),
    Field("enable_prefix_caching", "prefix caching", "bool"),
    Field("kv_cache_dtype", "KV cache dtype", "choice", choices=KV_CACHE_DTYPES,
          tip="fp8: e4m3 codes with a scale per page and kv-head, half the bytes of fp16 (dense policy only)"),
    Field("rate", "arrival rate", "float", 0.1, 100.0, "requests/s (engine clock)"),
    Field("max_num_seqs", "max running sequences", "int", 1, 256, "sequences"),
    Field("prompt_len", "prompt length (typical)", "int", 1, 4096, "tokens"),
    Field("prompt_len_max", "prompt length (max)", "int", 1, 8192, "tokens"),
    Field("output_len", "output length (typical)", "int", 1, 2048, "tokens"),
    Field("output_len_max", "output length (max)", "int", 1, 4096, "tokens"),
    Field("shared_prefix_frac", "shared-prefix fraction", "float", 0.0, 1.0, "of requests"),
    Field("n", "parallel samples n", "int", 1, 8, "per request"),
    Field("temperature", "temperature", "float", 0.0, 2.0),
    Field("policy", "selection policy", "choice", choices=POLICIES),
    Field("budget", "selection budget", "dspin", 0.01, 65536.0, "tokens (<= 1: fraction of context)"),
    Field("top_p_mass", "top-p (attention mass)", "float", 0.05, 1.0, "adaptive policy"),
    Field("tier_pages", "fast-tier size", "int", 0, 256, "pages per sequence (0 = off)"),
    Field("stats", "selection statistics", "bool", tip="oracle pages, recall and violations (slower)"),
    Field("seed", "seed", "spin", 0, 2**31 - 1),
    Field("kv_events", "publish KV events", "text",
          tip="vLLM-format KV-cache events on this ZMQ endpoint, e.g. tcp://*:5557 (empty = off)"),
)
FIELD_BY_KEY = {f.key: f for f in FIELDS}


def human(v: float) -> str:
    """1048576 -> '1,048,576', 0.05 -> '0.05': never '1.04858e+06'."""
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,g}"


def field_hint(f: Field) -> str:
    """The line under a field: unit, range in plain numbers, and whether it restarts."""
    parts = [f.unit] if f.unit else []
    if f.kind in ("int", "float", "spin", "dspin"):
        parts.append(f"{human(f.lo)} to {human(f.hi)}")
    text = "; ".join(parts)
    if f.key in RESTART_KEYS:
        text += (" — " if text else "") + "restarts the engine"
    return text


class ControlsPanel(QWidget):
    live_change = Signal(dict)            # validated live keys
    restart_requested = Signal(object)    # EngineConfig to rebuild with
    start_clicked = Signal()
    pause_clicked = Signal()
    step_clicked = Signal()
    reset_clicked = Signal()
    speed_changed = Signal(float)         # steps/s, 0 = unlimited
    attach_clicked = Signal()             # issue 15: watch a vLLM / SGLang server instead

    def __init__(self, config: EngineConfig, parent=None):
        super().__init__(parent)
        self.config = config
        self.widgets: dict[str, QWidget] = {}
        self.errors: dict[str, QLabel] = {}
        self._pending: dict[str, QTimer] = {}
        # replaced in tests; a person gets a dialog
        self.confirm: Callable[[str], bool] = self._confirm_dialog

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        buttons = QGridLayout()
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.step_btn = QPushButton("Step")
        self.reset_btn = QPushButton("Reset")
        for i, (b, sig, tip) in enumerate((
                (self.start_btn, self.start_clicked, "run the engine (F5)"),
                (self.pause_btn, self.pause_clicked, "pause after the current step (F6)"),
                (self.step_btn, self.step_clicked, "advance exactly one engine step (F7)"),
                (self.reset_btn, self.reset_clicked, "rebuild the engine and restart the workload"))):
            b.setToolTip(tip)
            b.clicked.connect(sig.emit)
            buttons.addWidget(b, 0, i)
        outer.addLayout(buttons)
        attach = QPushButton("Attach to a server...")      # issue 15: the Attach tab's dialog
        attach.setToolTip("watch a vLLM / SGLang server's KV cache (File > Attach...)")
        attach.clicked.connect(self.attach_clicked.emit)
        outer.addWidget(attach)
        speed_row = QVBoxLayout()
        speed_row.setSpacing(1)
        speed_row.addWidget(QLabel("speed (steps/s, 0 = as fast as it goes)"))
        self.speed = QLabeledSlider(Qt.Orientation.Horizontal)
        self.speed.setRange(0, 200)
        self.speed.setValue(0)
        self.speed.valueChanged.connect(lambda v: self.speed_changed.emit(float(v)))
        speed_row.addWidget(self.speed)
        outer.addLayout(speed_row)

        inner = QWidget()
        form = QFormLayout(inner)
        # the name above its widget: a side-by-side form squeezes the sliders' values
        # and the hints out of a narrow dock
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(6)
        for f in FIELDS:
            w = self._make(f)
            self.widgets[f.key] = w
            err = QLabel("")
            err.setStyleSheet(f"color: {ERROR_CSS};")
            err.setWordWrap(True)
            err.setVisible(False)
            self.errors[f.key] = err
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            v.setSpacing(1)
            v.addWidget(w)
            hint = field_hint(f)
            if hint:
                u = QLabel(hint)
                u.setWordWrap(True)
                u.setStyleSheet(f"color: {HINT_CSS}; font-size: small;")
                v.addWidget(u)
            v.addWidget(err)
            lab = QLabel(f.label)
            if f.tip:
                lab.setToolTip(f.tip)
                w.setToolTip(f.tip)
            form.addRow(lab, box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        scroll.setMinimumWidth(260)
        self.setMinimumWidth(280)
        outer.addWidget(scroll, 1)
        self.set_config(config)

    # ---- widgets ------------------------------------------------------------------
    def _make(self, f: Field) -> QWidget:
        key = f.key
        if f.kind == "int":
            w = QLabeledSlider(Qt.Orientation.Horizontal)
            w.setRange(int(f.lo), int(f.hi))
            w.valueChanged.connect(lambda _v, k=key: self._schedule(k))
        elif f.kind == "float":
            w = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
            w.setRange(f.lo, f.hi)
            w.setDecimals(2)
            w.valueChanged.connect(lambda _v, k=key: self._schedule(k))
        elif f.kind == "spin":
            w = QSpinBox()
            w.setRange(int(f.lo), int(f.hi))
            w.setKeyboardTracking(False)
            w.valueChanged.connect(lambda _v, k=key: self.commit(k))
        elif f.kind == "dspin":
            w = QDoubleSpinBox()
            w.setRange(f.lo, f.hi)
            w.setDecimals(2)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(lambda _v, k=key: self.commit(k))
        elif f.kind == "choice":
            w = QComboBox()
            for c in f.choices:
                w.addItem(str(c), c)
            w.activated.connect(lambda _i, k=key: self.commit(k))
        elif f.kind == "bool":
            w = QCheckBox()
            w.toggled.connect(lambda _v, k=key: self.commit(k))
        elif f.kind in ("path", "text"):
            w = QWidget()
            h = QHBoxLayout(w)
            h.setContentsMargins(0, 0, 0, 0)
            w.edit = QLineEdit()
            w.edit.setPlaceholderText("shipped model" if f.kind == "path" else "off")
            w.edit.editingFinished.connect(lambda k=key: self.commit(k))
            h.addWidget(w.edit, 1)
            if f.kind == "path":
                b = QPushButton("Browse...")
                b.clicked.connect(self._browse_model)
                h.addWidget(b)
        else:
            raise ValueError(f.kind)
        return w

    def _browse_model(self):
        d = QFileDialog.getExistingDirectory(self, "Model folder (Hugging Face checkpoint)")
        if d:
            self.widgets["model"].edit.setText(d)
            self.commit("model")

    def value(self, key: str) -> Any:
        f, w = FIELD_BY_KEY[key], self.widgets[key]
        if f.kind in ("int", "spin"):
            return int(w.value())
        if f.kind in ("float", "dspin"):
            return round(float(w.value()), 6)
        if f.kind == "choice":
            return w.currentData()
        if f.kind == "bool":
            return w.isChecked()
        t = w.edit.text().strip()
        return t or None

    def set_widget(self, key: str, value: Any) -> None:
        """Show `value` without treating it as a user change."""
        f, w = FIELD_BY_KEY[key], self.widgets[key]
        target = w.edit if f.kind in ("path", "text") else w
        target.blockSignals(True)
        try:
            if f.kind in ("int", "spin"):
                w.setValue(int(value))
            elif f.kind in ("float", "dspin"):
                w.setValue(float(value))
            elif f.kind == "choice":
                i = w.findData(value)
                w.setCurrentIndex(i if i >= 0 else 0)
            elif f.kind == "bool":
                w.setChecked(bool(value))
            else:
                w.edit.setText(value or "")
        finally:
            target.blockSignals(False)

    def set_config(self, config: EngineConfig) -> None:
        self.config = config
        for key in self.widgets:
            self.set_widget(key, config.get(key))
        self.clear_errors()

    # ---- validation and apply --------------------------------------------------------
    def show_error(self, key: str, message: str) -> None:
        lab = self.errors.get(key)
        if lab is None:       # a field without a widget: show it on the nearest one we have
            lab = next(iter(self.errors.values()))
            message = f"{key}: {message}"
        lab.setText(message)
        lab.setVisible(True)

    def clear_errors(self, key: str | None = None) -> None:
        for k, lab in self.errors.items():
            if key is None or k == key:
                lab.setVisible(False)
                lab.setText("")

    def error_text(self, key: str) -> str:
        lab = self.errors[key]
        return lab.text() if lab.isVisible() or lab.text() else ""

    def _schedule(self, key: str) -> None:
        # sliders report every pixel of a drag: apply once the hand has settled
        t = self._pending.get(key)
        if t is None:
            t = self._pending[key] = QTimer(self)
            t.setSingleShot(True)
            t.setInterval(250)
            t.timeout.connect(lambda k=key: self._settled(k))
        t.start()

    def _settled(self, key: str) -> None:
        w = self.widgets[key]
        if hasattr(w, "isSliderDown") and w.isSliderDown():
            self._pending[key].start()
            return
        self.commit(key)

    def flush(self) -> None:
        """Apply slider changes still waiting for the debounce (tests, before saving)."""
        for key, t in list(self._pending.items()):
            if t.isActive():
                t.stop()
                self.commit(key)

    def commit(self, key: str) -> bool:
        value = self.value(key)
        if value == self.config.get(key):
            self.clear_errors(key)
            return True
        try:
            new = EngineConfig.from_dict({key: value}, base=self.config)
        except ConfigError as e:
            self.clear_errors()
            # under the field the user changed; a clash with another field names it
            other = FIELD_BY_KEY.get(e.field)
            self.show_error(key, e.message if e.field == key else
                            f"conflicts with {other.label if other else e.field}: {e.message}")
            self.set_widget(key, self.config.get(key))
            return False
        self.clear_errors()
        if key in RESTART_KEYS:
            if not self.confirm(f"Changing '{FIELD_BY_KEY[key].label}' needs a new KV pool: "
                                f"the engine restarts and the current run is dropped. Go on?"):
                self.set_widget(key, self.config.get(key))
                return False
            self.config = new
            self.restart_requested.emit(new)
        else:
            self.config = new
            self.live_change.emit({key: value})
        return True

    def _confirm_dialog(self, text: str) -> bool:
        r = QMessageBox.question(self, "Restart the engine?", text,
                                 QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        return r == QMessageBox.StandardButton.Yes
