"""The engine loop, Qt-free: commands in, messages out.

It runs either in a child process (the default: the engine's Python work then never
competes with the GUI thread for the GIL, which on a 2-core machine otherwise costs
hundreds of ms per frame) or in a thread (tests, debugging). Both transports carry
the same commands and messages:

  commands  ("run", bool) ("step", n) ("reset", cfg|None) ("update", dict) ("select", key)
            ("info", block_id) ("want",) ("records",) ("speed", steps_per_s) ("quit",)
            ("export", "trace"|"metrics", path)
  messages  ("state", s) ("ready", summary) ("failed", msg, details) ("snapshot", snap)
            ("info", (block_id, info)) ("steps", n) ("records", list) ("config", cfg)
            ("exported", (kind, path, count, error|None))

Snapshots are credit-based: one is built only after the GUI took the previous one
("want"), so a fast engine and a 40 Hz view never multiply each other's work."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Callable

from tinyserve_core.engine.config import WORKLOAD_KEYS, EngineConfig

from .snapshot import SnapshotBuilder


def default_simulation_factory(config: EngineConfig):
    from tinyserve_core.engine.simulate import Simulation
    return Simulation(config)


class EngineHost:
    def __init__(self, config: EngineConfig, factory: Callable[[EngineConfig], Any],
                 send: Callable[[tuple], None]):
        self.factory = factory
        self.send = send
        self.sim = None
        self.config = config
        self.pending_config: EngineConfig | None = config
        self.state = "loading"
        self.steps_done = 0
        self.single_steps = 0
        self.running = False
        self.steps_per_s = 0.0
        self.selection_key = None
        self.dirty = True
        self.credit = True
        self.summary: dict = {}
        self.builder = SnapshotBuilder()
        self.generation = 0           # how many engines this host has built
        self.quit = False
        self._last_step_t = 0.0
        self._publish_error: str | None = None

    # ---- commands ----------------------------------------------------------------
    def _set_state(self, s: str):
        if s != self.state:
            self.state = s
            self.dirty = True
            self.send(("state", s))

    def command(self, cmd: tuple) -> None:
        op = cmd[0]
        try:
            if op == "run":
                self.running = bool(cmd[1])
                if self.sim is not None and self.state != "done":
                    self._set_state("running" if self.running else "paused")
            elif op == "step":
                self.running = False
                self.single_steps += int(cmd[1])
                if self.sim is not None and self.state == "running":
                    self._set_state("paused")
            elif op == "reset":
                self.pending_config = cmd[1] or self.config
                self.running = False
            elif op == "update":
                self._update(cmd[1])
            elif op == "select":
                self.selection_key = cmd[1]
                self.dirty = True
            elif op == "info":
                self._answer_info(int(cmd[1]))
            elif op == "want":
                self.credit = True
            elif op == "records":
                self.send(("records", list(self.sim.records) if self.sim is not None else []))
            elif op == "export":
                self._export(cmd[1], cmd[2])
            elif op == "speed":
                self.steps_per_s = max(0.0, float(cmd[1]))
            elif op == "quit":
                self.quit = True
        except Exception as e:
            self.send(("failed", f"{op}: {e}", traceback.format_exc()))

    def _update(self, changes: dict) -> None:
        new = EngineConfig.from_dict(changes, base=self.config)
        if self.sim is not None:
            self.sim.engine.update(**changes)
            self.sim.config = new
            if WORKLOAD_KEYS & set(changes):
                self.sim.restart_arrivals(new)
        self.config = new
        self.send(("config", new))

    def _export(self, kind: str, path: str) -> None:
        """Written here, next to the records: a long run's records never cross the pipe."""
        try:
            recs = self.sim.records if self.sim is not None else []
            if kind == "trace":
                from tinyserve_core.observe.trace import write_chrome_trace
                write_chrome_trace(recs, path)
                n = len(recs)
            elif kind == "metrics":
                from tinyserve_core.observe.csv_export import write_metrics_csv
                n = write_metrics_csv(recs, path)
            else:
                raise ValueError(f"unknown export {kind!r}")
            self.send(("exported", (kind, path, n, None)))
        except Exception as e:
            self.send(("exported", (kind, path, 0, f"{type(e).__name__}: {e}")))

    def _answer_info(self, block_id: int) -> None:
        if self.sim is None:
            return
        from .summary import describe_block
        self.send(("info", (block_id, describe_block(self.sim.engine, block_id))))

    # ---- the loop ------------------------------------------------------------------
    def _build(self) -> None:
        cfg, self.pending_config = self.pending_config, None
        self._set_state("loading")
        self.builder = SnapshotBuilder()
        self.sim = None
        self.steps_done = 0
        self.single_steps = 0
        self.send(("steps", 0))
        try:
            sim = self.factory(cfg)
        except Exception as e:  # a bad model folder or config: tell, stay usable
            self.running = False
            self._set_state("error")
            self.send(("failed", f"could not start the engine: {e}", traceback.format_exc()))
            return
        self.sim, self.config = sim, cfg
        self.generation += 1
        runner = getattr(sim.engine, "runner", None)
        if runner is not None and hasattr(runner, "profile"):
            runner.profile = True   # per-op timings for the Kernels view
        from .summary import engine_summary
        self.summary = engine_summary(cfg, sim.engine)
        self.summary["generation"] = self.generation
        self.send(("config", cfg))
        self.send(("ready", self.summary))
        self.dirty = True
        self._set_state("running" if self.running else "paused")

    def _step(self) -> None:
        sim = self.sim
        self._last_step_t = time.perf_counter()
        try:
            rec = sim.step()
        except Exception as e:
            self.running = False
            self.single_steps = 0
            self._set_state("error")
            self.send(("failed", f"engine error: {type(e).__name__}: {e}", traceback.format_exc()))
            return
        self.builder.ingest(rec)
        self.steps_done += 1
        self.send(("steps", self.steps_done))
        self.dirty = True
        if sim.done:
            self.running = False
            self.single_steps = 0
            self._set_state("done")

    def _publish(self) -> None:
        eng = self.sim.engine
        snap = self.builder.build(
            eng, step=self.steps_done, clock=float(getattr(eng, "clock", 0.0)),
            progress=float(getattr(self.sim, "progress", 0.0)), state=self.state,
            selection_key=self.selection_key, summary=self.summary)
        snap.engine_config = eng.config.to_dict()
        snap.generation = self.generation
        self.credit = False
        self.dirty = False
        self.send(("snapshot", snap))

    def iterate(self) -> float:
        """One turn of the loop; returns how long the caller may block for commands."""
        if self.pending_config is not None:
            self._build()
            return 0.0
        sim = self.sim
        want = sim is not None and not sim.done and (self.running or self.single_steps > 0)
        if want and self.running and self.steps_per_s > 0:
            wait = self._last_step_t + 1.0 / self.steps_per_s - time.perf_counter()
            if wait > 0:
                return min(wait, 0.05)
        if want:
            single = not self.running
            self._step()
            if single and self.single_steps > 0:
                self.single_steps -= 1
        if sim is not None and self.dirty and self.credit:
            try:
                self._publish()
                self._publish_error = None
            except Exception as e:
                self.dirty = False
                msg = f"snapshot error: {type(e).__name__}: {e}"
                if msg != self._publish_error:   # once, not once per step
                    self._publish_error = msg
                    self.send(("failed", msg, traceback.format_exc()))
        if want:
            return 0.0
        return 0.2


def child_main(cmd_conn, msg_conn, config: EngineConfig, factory) -> None:
    """Entry point of the engine process."""
    try:
        os.nice(5)   # interactive GUI first; the engine soaks up what is left
    except (AttributeError, OSError):
        pass
    try:
        import torch
        cores = os.cpu_count() or 1
        if 1 < cores <= 4 and torch.get_num_threads() >= cores:
            torch.set_num_threads(cores - 1)   # a core stays free for the GUI
    except ImportError:
        pass

    def send(msg):
        try:
            msg_conn.send(msg)
        except (BrokenPipeError, OSError):
            raise SystemExit(0)   # the GUI went away

    host = EngineHost(config, factory, send)
    while not host.quit:
        try:
            while cmd_conn.poll(0):
                host.command(cmd_conn.recv())
        except (EOFError, OSError):
            break
        if host.quit:
            break
        block = host.iterate()
        if block > 0:
            try:
                cmd_conn.poll(block)
            except (EOFError, OSError):
                break
