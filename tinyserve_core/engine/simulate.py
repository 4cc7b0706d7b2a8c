"""Simulation: a workload fed into an engine by the engine clock, and `tinyserve simulate`.

Arrivals are injected when the engine clock passes their arrival time; while nothing
runs, the clock jumps to the next arrival, so a run measures compute, not idling."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .config import HELP, EngineConfig
from .engine import Engine
from .sampling import SamplingParams


class Simulation:
    # Page-selection events (per sequence x layer x kv-head, with per-page scores when
    # statistics are on) dominate a record's size; observers consume them as steps
    # arrive and the trace/CSV/summary never read them, so only the newest records
    # keep them. A long GUI session then grows by a few small events per step.
    KEEP_SELECTION_EVENTS = 256

    def __init__(self, config: EngineConfig, engine: Engine | None = None, workload=None):
        self.config = config
        self.engine = engine or Engine(config)
        if workload is None:
            workload = build_workload_for(config, self.engine.tokenizer)
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
        cfg = self.config
        while self._next < len(self.workload) and self.workload[self._next].arrival_s <= eng.clock:
            w = self.workload[self._next]
            self._next += 1
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                    max_tokens=w.max_tokens, n=w.n, ignore_eos=True)
            prompt = w.prompt_token_ids if w.prompt_token_ids is not None else w.prompt
            eng.add_request(prompt, params, arrival_s=w.arrival_s, salt=w.salt)

    def restart_arrivals(self, config: EngineConfig) -> None:
        """Live workload change: the arrivals still to come are replaced by the new
        workload's, shifted to start at the engine's now; admitted requests go on."""
        fresh = build_workload_for(config, self.engine.tokenizer)
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
        if len(self.records) > self.KEEP_SELECTION_EVENTS:
            old = self.records[-self.KEEP_SELECTION_EVENTS - 1]
            if any(e.kind == "page_selection" for e in old.events):
                old.events = [e for e in old.events if e.kind != "page_selection"]
        return rec

    def run(self, progress=None):
        while not self.done:
            rec = self.step()
            if progress is not None:
                progress(rec)
        return self.records


def build_workload_for(config: EngineConfig, tokenizer):
    from . import workloads
    return workloads.from_engine_config(config, tokenizer)


# -- CLI ---------------------------------------------------------------------------------

def add_simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="JSON file with the same keys as these flags")
    for f in dataclasses.fields(EngineConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "workload":
            p.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="KIND",
                           help=HELP["workload"])
        elif f.type in ("bool", bool):
            p.add_argument(flag, nargs="?", const="true", default=argparse.SUPPRESS,
                           metavar="BOOL", help=HELP.get(f.name))
        else:
            default = getattr(EngineConfig(), f.name)
            p.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=f"{HELP.get(f.name, '')} (default: {default})")
    p.set_defaults(func=run_simulate)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    base = EngineConfig.load(args.config) if getattr(args, "config", None) else EngineConfig()
    overrides = {}
    for f in dataclasses.fields(EngineConfig):
        if hasattr(args, f.name):
            overrides[f.name] = getattr(args, f.name)
    wl = overrides.pop("workload", None)
    if wl is not None:
        if len(wl) > 2:
            raise ConfigError("workload", "takes a kind and, for replay, one file")
        overrides["workload"] = wl[0]
        if len(wl) == 2:
            if wl[0] != "replay":
                raise ConfigError("workload", f"only replay takes a file, not {wl[0]!r}")
            overrides["replay_file"] = wl[1]
    # --duration given on the command line replaces a request count from the defaults
    if "duration" in overrides and "requests" not in overrides:
        overrides["requests"] = None
    return EngineConfig.from_dict(overrides, base=base)


def run_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..observe.summary import format_summary_table, summarize, summary_to_json

    cfg = config_from_args(args)
    sim = Simulation(cfg)
    bar = tqdm(total=sim._total_seqs, unit="seq", desc="simulate",
               file=sys.stderr, dynamic_ncols=True)
    try:
        def progress(rec):
            if rec.finished:
                bar.update(len(rec.finished))
            bar.set_postfix_str(f"t={rec.t_end:.1f}s kv={rec.metrics.kv_cache_usage_perc:.0%}",
                                refresh=False)
        sim.run(progress)
    finally:
        bar.close()
    summary = summarize(sim.records)
    print(format_summary_table(summary))
    if cfg.trace:
        from ..observe.trace import write_chrome_trace
        write_chrome_trace(sim.records, cfg.trace)
        print(f"trace   -> {cfg.trace} (open in https://ui.perfetto.dev)")
    if cfg.metrics:
        from ..observe.csv_export import write_metrics_csv
        write_metrics_csv(sim.records, cfg.metrics)
        print(f"metrics -> {cfg.metrics}")
    if cfg.summary_json:
        Path(cfg.summary_json).write_text(json.dumps(summary_to_json(summary), indent=2) + "\n")
        print(f"summary -> {cfg.summary_json}")
    return 0
