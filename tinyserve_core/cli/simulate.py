"""`tinyserve simulate`: run the engine on a workload, print the summary table and
write the trace / metrics / summary files the settings ask for.

Flags are generated from EngineConfig's fields and their HELP lines, so every config
key is a flag and a JSON session file (`--config`) takes the same keys."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._parser import with_default


def register(sub) -> None:
    s = sub.add_parser("simulate", help="run the engine on a workload and summarise",
                       description=__doc__)
    add_simulate_args(s)


def add_simulate_args(p: argparse.ArgumentParser) -> None:
    from ..engine.config import HELP, EngineConfig

    p.add_argument("--config", default=None, help="JSON file with the same keys as these flags")
    for f in EngineConfig.flat_fields():
        flag = "--" + f.name.replace("_", "-")
        default = EngineConfig().get(f.name)
        if f.name == "workload":
            p.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="KIND",
                           help=with_default(HELP["workload"], default))
        elif f.type in ("bool", bool):
            p.add_argument(flag, nargs="?", const="true", default=argparse.SUPPRESS,
                           metavar="BOOL", help=with_default(HELP.get(f.name), default))
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=with_default(HELP.get(f.name), default))
    p.set_defaults(func=run_simulate)


def config_from_args(args: argparse.Namespace):
    from ..engine.config import EngineConfig
    from ..errors import ConfigError

    base = EngineConfig.load(args.config) if getattr(args, "config", None) else EngineConfig()
    overrides = {}
    for f in EngineConfig.flat_fields():
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

    from ..engine.simulate import Simulation
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
    out = cfg.output
    if out.trace:
        from ..observe.trace import write_chrome_trace
        write_chrome_trace(sim.records, out.trace)
        print(f"trace   -> {out.trace} (open in https://ui.perfetto.dev)")
    if out.metrics:
        from ..observe.csv_export import write_metrics_csv
        write_metrics_csv(sim.records, out.metrics)
        print(f"metrics -> {out.metrics}")
    if out.summary_json:
        Path(out.summary_json).write_text(json.dumps(summary_to_json(summary), indent=2) + "\n")
        print(f"summary -> {out.summary_json}")
    return 0
