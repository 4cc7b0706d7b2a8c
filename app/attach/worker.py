"""The attach loop on a QThread: sockets, model and recorder live on that thread; the
GUI takes the newest frame on its timer and reads replies to hover questions."""

from __future__ import annotations

from PySide6.QtCore import QThread, Signal

from .loop import AttachLoop
from .spec import AttachSpec


class AttachWorker(QThread):
    # one per frame built (credit-based: at most one waiting), never one per event: the
    # GUI takes a new frame at once instead of on its next timer tick
    frame_ready = Signal()

    def __init__(self, spec: AttachSpec, *, replay_timeout_s: float = 2.0, record: str | None = None,
                 parent=None):
        super().__init__(parent)
        self.loop = AttachLoop(spec, replay_timeout_s=replay_timeout_s, record=record)
        self.spec = spec
        self.loop.on_frame = self.frame_ready.emit

    def run(self) -> None:
        self.loop.run()

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Stop the loop and wait for it (sockets closed, a recording committed)."""
        self.loop.stop()
        self.wait(wait_ms)
