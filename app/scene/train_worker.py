"""Retraining the scene's field from the GUI, on its own thread: progress with live PSNR
and a preview image as Qt signals, cancellable between steps. A finished
run is evaluated on held-out views and saved, then the tab reloads the scene from it;
a cancelled run saves nothing and the scene stays as it was."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QThread, Signal

PREVIEW_EVERY = 50


class TrainWorker(QThread):
    progress = Signal(object)  # tinyserve_core.scene.train.Progress
    finished_ok = Signal(str, dict)  # weights path, stats (with held-out PSNR and mIoU)
    cancelled_at = Signal(int)  # the step it stopped at; nothing was saved
    failed = Signal(str)

    def __init__(self, scene: str, iters: int, size: int, out: Path, threads: int = 2, parent=None):
        super().__init__(parent)
        self.scene, self.iters, self.size, self.out, self.threads = scene, iters, size, Path(out), threads
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self):
        try:
            import torch

            from tinyserve_core.scene.spec import load_scene
            from tinyserve_core.scene.train import TrainConfig, evaluate_heldout, train_field
            from tinyserve_core.scene.weights import save_weights

            torch.set_num_threads(self.threads)
            spec = load_scene(self.scene)
            cfg = TrainConfig(size=self.size, iters=self.iters).validate()

            def on_step(p):
                self.progress.emit(p)
                return self._cancel.is_set()

            field, occ, stats = train_field(spec, cfg, on_step, preview_every=PREVIEW_EVERY)
            if stats["cancelled"]:  # a half-trained field must not replace the scene
                self.cancelled_at.emit(int(stats["steps"]))
                return
            held = evaluate_heldout(spec, field, occ, cfg.size)
            stats.update(heldout_psnr=held["psnr"], heldout_miou=held["miou"])
            save_weights(self.out, field, occ, spec, stats)
            self.finished_ok.emit(str(self.out), stats)
        except Exception as e:
            from .worker import _one_line

            self.failed.emit(_one_line(e))
