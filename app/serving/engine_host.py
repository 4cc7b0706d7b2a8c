"""The engine loop, Qt-free: commands in, messages out.

It runs either in a child process (the default: the engine's Python work then never
competes with the GUI thread for the GIL, which on a 2-core machine otherwise costs
hundreds of ms per frame) or in a thread (tests, debugging). Both transports carry
the same commands and messages, the dataclasses of serving/messages.py.

The host owns the engine: commands are applied and snapshots read on the host's own
loop, between steps, so the engine needs no locks (see Engine's docstring).

Snapshots are credit-based: one is built only after the GUI took the previous one
(WantSnapshot), so a fast engine and a 40 Hz view never multiply each other's work."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Callable

from tinyserve_core.engine.config import WORKLOAD_KEYS, EngineConfig
from tinyserve_core.errors import TinyServeError

from . import messages as m
from .snapshot import SnapshotBuilder


def default_simulation_factory(config: EngineConfig):
    from tinyserve_core.engine.simulate import Simulation
    return Simulation(config)


class EngineHost:
    def __init__(self, config: EngineConfig, factory: Callable[[EngineConfig], Any],
                 send: Callable[[m.Message], None], profile: bool = True):
        self.factory = factory
        self.send = send
        # The GUI's Kernels view needs per-op timings: the engines this host builds run
        # with the `profile` key on (the config the GUI sees keeps the user's value).
        self.profile = profile
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
        self._kv_urls: tuple = ()
        self.kv_publisher = None      # issue 15: KV events in vLLM's format (config kv_events)

    # ---- commands ----------------------------------------------------------------
    def _set_state(self, s: str):
        if s != self.state:
            self.state = s
            self.dirty = True
            self.send(m.StateChanged(s))

    def command(self, cmd: m.Command) -> None:
        try:
            match cmd:
                case m.Run(on=on):
                    self.running = bool(on)
                    if self.sim is not None and self.state != "done":
                        self._set_state("running" if self.running else "paused")
                case m.Step(n=n):
                    self.running = False
                    self.single_steps += int(n)
                    if self.sim is not None and self.state == "running":
                        self._set_state("paused")
                case m.Reset(config=config):
                    self.pending_config = config or self.config
                    self.running = False
                case m.Update(changes=changes):
                    self._update(changes)
                case m.Select(key=key):
                    self.selection_key = key
                    self.dirty = True
                case m.BlockInfoQuery(block_id=block_id):
                    self._answer_info(int(block_id))
                case m.WantSnapshot():
                    self.credit = True
                case m.GetRecords():
                    self.send(m.RecordsReply(list(self.sim.records) if self.sim is not None else []))
                case m.Export(kind=kind, path=path):
                    self._export(kind, path)
                case m.Speed(steps_per_s=sps):
                    self.steps_per_s = max(0.0, float(sps))
                case m.Quit():
                    self.quit = True
                    self.close_kv_events()
                case _:
                    raise TypeError(f"not a command: {cmd!r}")
        except Exception as e:
            self.send(m.Failed(f"{type(cmd).__name__}: {e}", traceback.format_exc()))

    def _update(self, changes: dict) -> None:
        new = EngineConfig.from_dict(changes, base=self.config)
        if self.sim is not None:
            self.sim.engine.update(**changes)
            self.sim.config = new
            if WORKLOAD_KEYS & set(changes):
                self.sim.restart_arrivals(new)
        self.config = new
        if {"kv_events", "kv_events_replay"} & set(changes):
            self.open_kv_events(new)
        self.send(m.ConfigChanged(new))

    def _export(self, kind: str, path: str) -> None:
        """Written here, next to the records: a long run's records never cross the pipe.
        Through the library's writers: atomic, symlinks followed, non-regular files refused."""
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
            self.send(m.Exported(kind, path, n))
        except TinyServeError as e:   # already names the path and the problem
            self.send(m.Exported(kind, path, 0, str(e)))
        except Exception as e:
            self.send(m.Exported(kind, path, 0, f"{type(e).__name__}: {e}"))

    def _answer_info(self, block_id: int) -> None:
        if self.sim is None:
            return
        from .summary import describe_block
        self.send(m.BlockInfoReply(block_id, describe_block(self.sim.engine, block_id)))

    # ---- KV events (issue 15) --------------------------------------------------------
    def open_kv_events(self, cfg: EngineConfig) -> None:
        """Publish this engine's KV events where the config says. The same endpoints
        across a reset keep their publisher (its port stays bound; subscribers keep their
        sequence) and say AllBlocksCleared: the new engine starts with an empty cache."""
        url, rep = cfg.get("kv_events"), cfg.get("kv_events_replay")
        pub = self.kv_publisher
        if pub is not None and (url, rep) == self._kv_urls:
            from tinyserve_core.observe.kv_event_wire import AllBlocksCleared
            pub.block_size = cfg.cache.block_size
            pub.publish([AllBlocksCleared()])
            return
        self.close_kv_events()
        if url:
            from tinyserve_core.observe.kv_event_publisher import KVEventPublisher
            try:
                self.kv_publisher = KVEventPublisher(url, rep, block_size=cfg.cache.block_size)
                self._kv_urls = (url, rep)
            except TinyServeError as e:     # a taken port: say so, keep the engine running
                self.send(m.Failed(f"KV events: {e}", ""))

    def close_kv_events(self) -> None:
        if self.kv_publisher is not None:
            self.kv_publisher.close()
            self.kv_publisher = None

    # ---- the loop ------------------------------------------------------------------
    def _build(self) -> None:
        cfg, self.pending_config = self.pending_config, None
        self._set_state("loading")
        self.builder = SnapshotBuilder()
        self.sim = None
        self.steps_done = 0
        self.single_steps = 0
        self.send(m.StepsDone(0))
        try:
            sim = self.factory(cfg.replace(profile=True) if self.profile else cfg)
        except Exception as e:  # a bad model folder or config: tell, stay usable
            self.running = False
            self._set_state("error")
            self.send(m.Failed(f"could not start the engine: {e}", traceback.format_exc()))
            return
        self.sim, self.config = sim, cfg
        self.generation += 1
        from .summary import engine_summary
        self.summary = engine_summary(cfg, sim.engine)
        self.summary["generation"] = self.generation
        self.open_kv_events(cfg)
        self.send(m.ConfigChanged(cfg))
        self.send(m.Ready(self.summary))
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
            self.send(m.Failed(f"engine error: {type(e).__name__}: {e}", traceback.format_exc()))
            return
        self.builder.ingest(rec)
        self.builder.record_state(sim.engine, rec)
        if self.kv_publisher is not None:
            self.kv_publisher.add(rec)
        self.steps_done += 1
        self.send(m.StepsDone(self.steps_done))
        self.dirty = True
        if sim.done:
            self.running = False
            self.single_steps = 0
            self._set_state("done")

    def _publish(self) -> None:
        eng = self.sim.engine
        snap = self.builder.build(
            eng, step=self.steps_done, clock=eng.clock, progress=self.sim.progress, state=self.state,
            selection_key=self.selection_key, summary=self.summary)
        snap.engine_config = eng.config.to_dict()
        snap.generation = self.generation
        self.credit = False
        self.dirty = False
        self.send(m.SnapshotReady(snap))

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
                    self.send(m.Failed(msg, traceback.format_exc()))
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
    host.close_kv_events()
