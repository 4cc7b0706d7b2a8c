"""The attach loop on a QThread: sockets, model and recorder live on that thread; the
GUI takes the newest frame on its timer and reads replies to hover questions."""

from __future__ import annotations

from PySide6.QtCore import QThread

from .loop import AttachLoop
from .spec import AttachSpec


class AttachWorker(QThread):
    def __init__(self, spec: AttachSpec, *, replay_timeout_s: float = 2.0, record: str | None = None,
                 parent=None):
        super().__init__(parent)
        self.loop = AttachLoop(spec, replay_timeout_s=replay_timeout_s, record=record)
        self.spec = spec

    def run(self) -> None:
        self.loop.run()

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Stop the loop and wait for it (sockets closed, a recording committed)."""
        self.loop.stop()
        self.wait(wait_ms)
