"""The engine's thread. The GUI never touches the engine directly: it sends commands
(thread-safe methods below) and pulls the newest Snapshot on its own timer, so a
step's thousands of events never become thousands of Qt signals.

Only rare things are signals: the engine is ready, it failed, its state changed."""

from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

from tinyserve_core.engine.config import EngineConfig

from .serving.snapshot import Snapshot, SnapshotBuilder


def default_simulation_factory(config: EngineConfig):
    from tinyserve_core.engine.simulate import Simulation
    return Simulation(config)


class EngineWorker(QThread):
    ready = Signal(dict)          # engine summary (model, backend, pool)
    failed = Signal(str, str)     # one-line message, details (traceback)
    state_changed = Signal(str)   # "loading" | "paused" | "running" | "done" | "error"

    def __init__(self, config: EngineConfig,
                 factory: Callable[[EngineConfig], Any] = default_simulation_factory,
                 parent=None):
        super().__init__(parent)
        self._factory = factory
        self._cmds: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._quit = False
        self.engine_lock = threading.Lock()   # held while stepping; exports take it briefly
        self._snap_lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._info_reply: tuple[int, dict] | None = None
        self.sim = None
        self.config = config
        self._pending_config: EngineConfig | None = config
        self.state = "loading"
        self.steps_done = 0
        self.steps_per_s = 0.0                # 0 = as fast as the engine goes
        self._single_steps = 0
        self._running = False
        self._selection_key = None
        self._dirty = True
        self._summary: dict = {}
        self._builder = SnapshotBuilder()

    # ---- commands (any thread) ---------------------------------------------------
    def _send(self, *cmd):
        self._cmds.put(cmd)
        self._wake.set()

    def start_engine(self): self._send("run", True)
    def pause(self): self._send("run", False)
    def step_once(self): self._send("step", 1)
    def step_n(self, n: int): self._send("step", int(n))
    def reset(self, config: EngineConfig | None = None): self._send("reset", config)
    def update_live(self, **kw): self._send("update", kw)
    def set_selection_key(self, key): self._send("select", key)
    def request_block_info(self, block_id: int): self._send("info", int(block_id))

    def set_speed(self, steps_per_s: float):
        self.steps_per_s = max(0.0, float(steps_per_s))
        self._wake.set()

    def stop(self, timeout_ms: int = 5000) -> None:
        self._quit = True
        self._wake.set()
        self.wait(timeout_ms)

    def take_snapshot(self) -> Snapshot | None:
        with self._snap_lock:
            s, self._latest = self._latest, None
        return s

    def take_block_info(self) -> tuple[int, dict] | None:
        with self._snap_lock:
            r, self._info_reply = self._info_reply, None
        return r

    def records(self) -> list:
        """All StepRecords of this run (for exports); waits for the current step."""
        with self.engine_lock:
            return list(self.sim.records) if self.sim is not None else []

    # ---- thread ------------------------------------------------------------------
    def _set_state(self, s: str):
        if s != self.state:
            self.state = s
            self._dirty = True
            self.state_changed.emit(s)

    def _build(self):
        cfg, self._pending_config = self._pending_config, None
        self._set_state("loading")
        self._builder = SnapshotBuilder()
        old, self.sim = self.sim, None
        del old
        self.steps_done = 0
        self._single_steps = 0
        try:
            sim = self._factory(cfg)
        except Exception as e:  # a bad model folder or config: tell, stay usable
            self._running = False
            self._set_state("error")
            self.failed.emit(f"could not start the engine: {e}", traceback.format_exc())
            return
        self.sim, self.config = sim, cfg
        runner = getattr(sim.engine, "runner", None)
        if runner is not None and hasattr(runner, "profile"):
            runner.profile = True   # per-op timings for the Kernels view
        from .serving.summary import engine_summary
        self._summary = engine_summary(cfg, sim.engine)
        self.ready.emit(self._summary)
        self._dirty = True
        self._set_state("running" if self._running else "paused")

    def _handle(self, cmd):
        op = cmd[0]
        if op == "run":
            self._running = cmd[1]
            if self.sim is not None:
                self._set_state("running" if self._running else "paused")
        elif op == "step":
            self._running = False
            self._single_steps += cmd[1]
            if self.sim is not None:
                self._set_state("paused")
        elif op == "reset":
            self._pending_config = cmd[1] or self.config
            self._running = False
        elif op == "update":
            if self.sim is not None:
                target = self.sim if hasattr(self.sim, "update") else self.sim.engine
                target.update(**cmd[1])
                self.config = EngineConfig.from_dict(cmd[1], base=self.config)
        elif op == "select":
            self._selection_key = cmd[1]
            self._dirty = True
        elif op == "info":
            self._answer_info(cmd[1])

    def _answer_info(self, block_id: int):
        if self.sim is None:
            return
        from .serving.summary import describe_block
        info = describe_block(self.sim.engine, block_id)
        with self._snap_lock:
            self._info_reply = (block_id, info)

    def _step(self):
        sim = self.sim
        with self.engine_lock:
            rec = sim.step()
        self._builder.ingest(rec)
        self.steps_done += 1
        self._dirty = True
        if sim.done:
            self._running = False
            self._single_steps = 0
            self._set_state("done")

    def _publish(self):
        with self._snap_lock:
            if self._latest is not None:   # the GUI has not taken the last one yet
                return
        eng = self.sim.engine
        snap = self._builder.build(
            eng, step=self.steps_done, clock=float(getattr(eng, "clock", 0.0)),
            progress=float(getattr(self.sim, "progress", 0.0)), state=self.state,
            selection_key=self._selection_key, summary=self._summary)
        with self._snap_lock:
            self._latest = snap
        self._dirty = False

    def run(self):
        last_step_t = 0.0
        while not self._quit:
            try:
                while True:
                    self._handle(self._cmds.get_nowait())
            except queue.Empty:
                pass
            except Exception as e:
                self.failed.emit(str(e), traceback.format_exc())
            if self._pending_config is not None:
                self._build()
                continue
            sim = self.sim
            want = sim is not None and not sim.done and (self._running or self._single_steps > 0)
            if want and self._running and self.steps_per_s > 0:
                wait = last_step_t + 1.0 / self.steps_per_s - time.perf_counter()
                if wait > 0:
                    self._wake.wait(min(wait, 0.05))
                    self._wake.clear()
                    continue
            if want:
                last_step_t = time.perf_counter()
                try:
                    self._step()
                except Exception as e:
                    self._running = False
                    self._single_steps = 0
                    self._set_state("error")
                    self.failed.emit(f"engine error: {type(e).__name__}: {e}",
                                     traceback.format_exc())
                if self._single_steps > 0 and not self._running:
                    self._single_steps -= 1
            if sim is not None and self._dirty:
                try:
                    self._publish()
                except Exception as e:
                    self.failed.emit(f"snapshot error: {e}", traceback.format_exc())
                    self._dirty = False
            if not want:
                self._wake.wait(0.03 if self._dirty else 0.2)
                self._wake.clear()
            else:
                # let the GUI thread have the interpreter between steps
                time.sleep(0.001)
