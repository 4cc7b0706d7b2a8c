"""Simulation: a workload fed into an engine by the engine clock (`tinyserve simulate`
lives in tinyserve_core.cli.simulate).

Arrivals are injected when the engine clock passes their arrival time; while nothing
runs, the clock jumps to the next arrival, so a run measures compute, not idling."""

from __future__ import annotations

import dataclasses

from .config import EngineConfig
from .engine import Engine
from .sampling import SamplingParams


class Simulation:
    # The columnar selection records of a step (per sequence x layer x kv-head, with
    # per-page scores; statistics on) dominate a record's size; observers consume them
    # as steps arrive and the trace/CSV/summary read only the per-layer summary, so only
    # the newest records keep them. A long GUI session then grows by a few small
    # objects per step.
    KEEP_SELECTION_DETAIL = 256

    def __init__(self, config: EngineConfig, engine: Engine | None = None, workload=None):
        self.config = config
        self.engine = engine or Engine(config)
        if workload is None:
            workload = build_workload_for(config, self.engine)
        self.workload = sorted(workload, key=lambda r: r.arrival_s)
        self._next = 0
        self.records = []
        self.rejected: list[str] = []
        # counted as steps arrive: the GUI reads progress at every snapshot
        self._finished_seqs = 0
        self._total_seqs = sum(max(1, w.n) for w in self.workload)

    @property
    def num_requests(self) -> int:
        return len(self.workload)

    @property
    def done(self) -> bool:
        return self._next >= len(self.workload) and not self.engine.has_unfinished()

    @property
    def progress(self) -> float:
        if not self._total_seqs:
            return 1.0
        return min(1.0, self._finished_seqs / self._total_seqs)

    def _admit(self) -> None:
        eng = self.engine
        if not eng.has_unfinished() and self._next < len(self.workload):
            eng.clock = max(eng.clock, self.workload[self._next].arrival_s)
        sampling = self.config.sampling
        while self._next < len(self.workload) and self.workload[self._next].arrival_s <= eng.clock:
            w = self.workload[self._next]
            self._next += 1
            params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                    max_tokens=w.max_tokens, n=w.n, ignore_eos=True)
            prompt = w.prompt_token_ids if w.prompt_token_ids is not None else w.prompt
            eng.add_request(prompt, params, arrival_s=w.arrival_s, salt=w.salt)

    def restart_arrivals(self, config: EngineConfig) -> None:
        """Live workload change: the arrivals still to come are replaced by the new
        workload's, shifted to start at the engine's now; admitted requests go on."""
        fresh = build_workload_for(config, self.engine)
        for w in fresh:
            w.arrival_s += self.engine.clock
        self.workload = self.workload[: self._next] + sorted(fresh, key=lambda r: r.arrival_s)
        self._total_seqs = sum(max(1, w.n) for w in self.workload)
        self.config = config

    def step(self):
        self._admit()
        rec = self.engine.step()
        self.records.append(rec)
        self._finished_seqs += len(rec.finished)
        if len(self.records) > self.KEEP_SELECTION_DETAIL:
            old = self.records[-self.KEEP_SELECTION_DETAIL - 1]
            if any(s.detail is not None for s in old.selection):
                old.selection = tuple(dataclasses.replace(s, detail=None) for s in old.selection)
        return rec

    def run(self, progress=None):
        while not self.done:
            rec = self.step()
            if progress is not None:
                progress(rec)
        return self.records


def build_workload_for(config: EngineConfig, engine: Engine):
    """The config's workload in the engine's tokens, checked against its model (context
    and vocabulary) before the run starts rather than failing in the middle of it."""
    from . import workloads
    limits = workloads.ModelLimits(context=engine.max_model_len, vocab_size=engine.model_config.vocab_size)
    return workloads.from_engine_config(config, engine.tokenizer, limits=limits)
