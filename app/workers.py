"""The GUI's handle on the engine. The engine loop (serving/engine_host.py) runs in a
child process by default, so its Python work never holds the GUI thread's GIL; a
thread transport exists for tests and debugging. The GUI sends commands (the
thread-safe methods below) and pulls the newest Snapshot on its own timer; only rare
things become Qt signals: the engine is ready, it failed, its state changed."""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from tinyserve_core.engine.config import EngineConfig

from .gil import favour_gui_thread
from .serving import messages as m
from .serving.engine_host import EngineHost, child_main, default_simulation_factory
from .serving.snapshot import Snapshot

__all__ = ["EngineWorker", "default_simulation_factory"]


class _Reader(QThread):
    """Receives the engine process's messages (blocking recv releases the GIL)."""

    def __init__(self, conn, deliver, on_eof):
        super().__init__()
        self.conn, self.deliver, self.on_eof = conn, deliver, on_eof

    def run(self):
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.on_eof()
                return
            self.deliver(msg)


class _HostThread(QThread):
    """The same loop in a thread of this process."""

    def __init__(self, host: EngineHost, cmds: queue.Queue, wake: threading.Event):
        super().__init__()
        self.host, self.cmds, self.wake = host, cmds, wake

    def run(self):
        h = self.host
        while not h.quit:
            try:
                while True:
                    h.command(self.cmds.get_nowait())
            except queue.Empty:
                pass
            if h.quit:
                break
            block = h.iterate()
            if block > 0:
                self.wake.wait(block)
                self.wake.clear()


class EngineWorker(QObject):
    ready = Signal(dict)          # engine summary (model, backend, pool)
    failed = Signal(str, str)     # one-line message, details (traceback)
    state_changed = Signal(str)   # "loading" | "paused" | "running" | "done" | "error"

    def __init__(self, config: EngineConfig,
                 factory: Callable[[EngineConfig], Any] = default_simulation_factory,
                 mode: str = "process", parent=None):
        super().__init__(parent)
        if mode not in ("process", "thread"):
            raise ValueError(f"mode: must be 'process' or 'thread', got {mode!r}")
        self.mode = mode
        self.config = config
        self.state = "loading"
        self.steps_done = 0
        self.summary: dict = {}
        # Kept: the reader (or host) thread delivers the newest snapshot and block info
        # while the GUI thread takes them; the lock makes each take-and-clear one step.
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._info: tuple[int, dict] | None = None
        self._records: queue.Queue = queue.Queue()
        self._exports: queue.Queue = queue.Queue()
        self._closing = False
        self._factory = factory
        if mode == "process":
            self._spawn(config)
        else:
            # the engine thread holds the GIL for most of a step; hand it back to the
            # GUI thread quickly (the process transport has no such contention)
            favour_gui_thread(0.0005)
            self._cmds: queue.Queue = queue.Queue()
            self._wake = threading.Event()
            self._host = EngineHost(config, factory, self._deliver)
            self._runner = _HostThread(self._host, self._cmds, self._wake)

    def _spawn(self, config: EngineConfig) -> None:
        ctx = mp.get_context("spawn")   # never fork a process that runs Qt threads
        cmd_r, self._cmd_w = ctx.Pipe(duplex=False)
        msg_r, msg_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=child_main, args=(cmd_r, msg_w, config, self._factory),
                                 daemon=True, name="tinyserve-engine")
        self._proc.start()
        cmd_r.close()
        msg_w.close()
        self._runner = _Reader(msg_r, self._deliver, self._on_eof)

    def start(self) -> None:
        self._runner.start()

    # ---- commands (any thread) ---------------------------------------------------
    def _send(self, cmd: m.Command):
        if self.mode == "process":
            try:
                self._cmd_w.send(cmd)
            except (BrokenPipeError, OSError):
                pass   # the process is gone; _on_eof has said so
        else:
            self._cmds.put(cmd)
            self._wake.set()

    def start_engine(self): self._send(m.Run(True))
    def pause(self): self._send(m.Run(False))
    def step_once(self): self._send(m.Step(1))
    def step_n(self, n: int): self._send(m.Step(int(n)))
    def reset(self, config: EngineConfig | None = None):
        if self.mode == "process" and not self._proc.is_alive():
            # the process died: start a fresh one (its first build is the reset)
            self._runner.wait(2000)
            self._spawn(config or self.config)
            self._runner.start()
            return
        self._send(m.Reset(config))
    def update_live(self, **kw): self._send(m.Update(kw))
    def set_selection_key(self, key): self._send(m.Select(key))
    def request_block_info(self, block_id: int): self._send(m.BlockInfoQuery(int(block_id)))
    def set_speed(self, steps_per_s: float): self._send(m.Speed(float(steps_per_s)))

    def take_snapshot(self) -> Snapshot | None:
        with self._lock:
            s, self._latest = self._latest, None
        if s is not None:
            self._send(m.WantSnapshot())
        return s

    def take_block_info(self) -> tuple[int, dict] | None:
        with self._lock:
            r, self._info = self._info, None
        return r

    def records(self, timeout_s: float = 60.0) -> list:
        """All StepRecords of this run (for exports); answered between two steps."""
        while not self._records.empty():
            self._records.get_nowait()
        self._send(m.GetRecords())
        try:
            return self._records.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError("the engine did not answer with its records") from None

    def export(self, kind: str, path: str, timeout_s: float = 300.0) -> int:
        """The engine side writes the trace or the metrics CSV; returns the count written."""
        while not self._exports.empty():
            self._exports.get_nowait()
        self._send(m.Export(kind, str(path)))
        try:
            done: m.Exported = self._exports.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"the engine did not write {path}") from None
        if done.error:
            raise OSError(f"{path}: {done.error}")
        return done.count

    def stop(self, timeout_s: float = 5.0) -> None:
        self._closing = True
        self._send(m.Quit())
        if self.mode == "process":
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(1.0)
            self._cmd_w.close()
        self._runner.wait(int(timeout_s * 1000))

    # ---- messages (reader or host thread) -----------------------------------------
    def _deliver(self, msg: m.Message) -> None:
        match msg:
            case m.SnapshotReady(snapshot=snap):
                with self._lock:
                    self._latest = snap
            case m.StepsDone(n=n):
                self.steps_done = n
            case m.StateChanged(state=state):
                self._set_state(state)
            case m.BlockInfoReply(block_id=block_id, info=info):
                with self._lock:
                    self._info = (block_id, info)
            case m.RecordsReply(records=records):
                self._records.put(records)
            case m.Exported():
                self._exports.put(msg)
            case m.ConfigChanged(config=config):
                self.config = config
            case m.Ready(summary=summary):
                self.summary = summary
                self.ready.emit(summary)
            case m.Failed(message=message, details=details):
                self.failed.emit(message, details)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)

    def _on_eof(self) -> None:
        if not self._closing:
            code = self._proc.exitcode if self.mode == "process" else None
            self._set_state("error")
            self.failed.emit(f"the engine process exited unexpectedly (exit code {code})",
                             "The engine runs in a child process; it stopped without a Python "
                             "error (killed, out of memory or a crash in native code). "
                             "Reset starts a new one.")
