"""Training from the Scene tab: the train panel's fields checked, a `TrainWorker` thread
started (progress with PSNR and a preview, cancel), and the new weights loaded when it
finishes; a cancelled run saves nothing and leaves the scene as it was.

A mixin of `SceneTab` (tab.py): it owns `trainer` (None when idle), and on success sets
`weights` and reloads the scene on `worker`."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage, QPixmap

from tinyserve_core.errors import ConfigError


class TrainControl:
    def train_settings(self):
        from tinyserve_core.scene.train import TrainConfig

        t = self.train_panel
        t.iters_error.show_error("")
        t.size_error.show_error("")
        vals = {}
        for name, edit, err in (("iters", t.iters, t.iters_error), ("size", t.size, t.size_error)):
            try:
                vals[name] = int(edit.text())
            except ValueError:
                err.show_error(f"{name}: must be a whole number, got {edit.text()!r}")
                return None
        try:
            TrainConfig(size=vals["size"], iters=vals["iters"]).validate()
        except ConfigError as e:
            (t.iters_error if e.field == "iters" else t.size_error).show_error(str(e))
            return None
        if vals["size"] > 512:
            t.size_error.show_error(f"size: at most 512 pixels here, got {vals['size']}")
            return None
        return vals["iters"], vals["size"]

    def train(self, threads: int | None = None):
        import os

        from .train_worker import TrainWorker

        s = self.train_settings()
        if s is None or self.trainer is not None:
            return
        t = self.train_panel
        out = self.weights_dir / f"{self.scene}.weights.safetensors"
        self.trainer = TrainWorker(self.scene, s[0], s[1], out, threads or min(2, os.cpu_count() or 1), self)
        self.trainer.progress.connect(self._on_train_progress)
        self.trainer.finished_ok.connect(self._on_trained)
        self.trainer.cancelled_at.connect(self._on_train_cancelled)
        self.trainer.failed.connect(self._on_train_failed)
        self.trainer.finished.connect(self._train_thread_done)
        t.bar.setRange(0, s[0])
        t.bar.setValue(0)
        t.go.setEnabled(False)
        t.cancel.setEnabled(True)
        t.status.setText("preparing training views...")
        self.trainer.start()

    def cancel_training(self):
        if self.trainer is not None:
            self.trainer.cancel()
            self.train_panel.status.setText("cancelling...")

    def _on_train_progress(self, p):
        t = self.train_panel
        t.bar.setValue(p.step)
        t.status.setText(f"step {p.step}/{p.total}, PSNR <b>{p.psnr:.2f} dB</b>, loss {p.loss:.4f}, {p.elapsed:.0f} s")
        if p.preview is not None:
            t.preview.setPixmap(QPixmap.fromImage(_qimage((np.clip(p.preview, 0, 1) * 255).astype(np.uint8))))

    def _on_trained(self, path: str, stats: dict):
        self.train_panel.status.setText(
            f"trained {stats['steps']} steps in {stats['train_seconds']:.0f} s: held-out PSNR "
            f"<b>{stats['heldout_psnr']:.2f} dB</b>, mIoU <b>{stats['heldout_miou']:.3f}</b>; saved {path}; reloading")
        self.weights = path
        self.frame = None
        self.worker.submit("load", self.worker.load, self.scene, path)

    def _on_train_cancelled(self, step: int):
        self.train_panel.status.setText(f"cancelled at step {step}; nothing saved, the scene is unchanged")

    def _on_train_failed(self, msg: str):
        self.train_panel.status.setText(f"<span style='color:#e0473c'>training failed: {msg}</span>")

    def _train_thread_done(self):
        self.trainer = None
        self.train_panel.go.setEnabled(True)
        self.train_panel.cancel.setEnabled(False)


def _qimage(rgb8: np.ndarray) -> QImage:
    a = np.ascontiguousarray(rgb8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
