"""`tinyserve simulate`: run the engine on a workload, print the summary table and
write the trace / metrics / summary files the settings ask for.

Flags are generated from EngineConfig's fields and their HELP lines, so every config
key is a flag and a JSON session file (`--config`) takes the same keys."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
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
    from ..engine.simulate import Simulation

    cfg = config_from_args(args)
    outputs = _check_outputs(cfg.output)    # before the model loads: a bad path costs nothing
    with _StopOnSignal() as stop:
        sim = Simulation(cfg)
        sinks = _open_sinks(cfg.output, cfg.cache.block_size)
        try:
            _run(sim, sinks, stop)
        except BaseException:   # an engine error: no temporary file stays behind
            for w in sinks.values():
                if not isinstance(w, Exception):
                    w.abort()
            raise
        return _finish(sim, sinks, outputs, partial=stop.requested)


def _check_outputs(out) -> dict[str, str]:
    """Every output path (by field), checked for writing; two outputs on one file are
    refused (the later would silently replace the earlier)."""
    from ..errors import ConfigError
    from ..writers import check_writable

    real: dict[str, Path] = {}
    paths: dict[str, str] = {}
    for field in ("trace", "metrics", "summary_json"):
        path = getattr(out, field)
        if path:
            target = check_writable(path, field)
            for other, t in real.items():
                if t == target:
                    raise ConfigError(field, f"{path} is also the {other} output")
            real[field], paths[field] = target, str(path)
    return paths


class _StopOnSignal:
    """SIGINT and SIGTERM ask the run to stop between steps (a step is never cut in half,
    so the streamed files stay consistent); a second signal interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():   # signal() works only there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _open_sinks(out, block_size: int) -> dict[str, object]:
    """Streaming writers for the trace and metrics: written step by step, so a long run
    holds neither in memory and an interrupted one still has them."""
    sinks: dict[str, object] = {}
    try:
        if out.trace:
            from ..observe.trace_stream import StreamingTraceWriter
            sinks["trace"] = StreamingTraceWriter(out.trace)
        if out.metrics:
            from ..observe.csv_export import MetricsCsvWriter
            sinks["metrics"] = MetricsCsvWriter(out.metrics)
        if out.kv_events:
            from ..observe.kv_event_publisher import KVEventPublisher
            sinks["kv_events"] = KVEventPublisher(out.kv_events, out.kv_events_replay,
                                                  block_size=block_size)
    except BaseException:
        for w in sinks.values():
            w.abort()
        raise
    return sinks


def _run(sim, sinks: dict, stop: _StopOnSignal) -> None:
    from tqdm import tqdm

    from ..errors import TinyServeError

    bar = tqdm(total=sim._total_seqs, unit="seq", desc="simulate", file=sys.stderr, dynamic_ncols=True)
    try:
        while not sim.done and not stop.requested:
            rec = sim.step()
            for name, w in list(sinks.items()):
                try:
                    w.add(rec)
                except TinyServeError as e:     # reported at the end; the run and the other outputs go on
                    sinks[name] = e
            if rec.finished:
                bar.update(len(rec.finished))
            bar.set_postfix_str(f"t={rec.t_end:.1f}s kv={rec.metrics.kv_cache_usage_perc:.0%}", refresh=False)
    except KeyboardInterrupt:                   # a second signal: keep what the steps so far gave
        stop.requested = True
    finally:
        bar.close()


def _finish(sim, sinks: dict, outputs: dict[str, str], *, partial: bool) -> int:
    """Print the summary and close every output; one failed output never costs the
    others. Exit 130 after an interrupt, 1 when an output failed, else 0."""
    from ..errors import TinyServeError
    from ..observe.summary import format_summary_table, summarize, summary_to_json
    from ..writers import write_json

    summary = summarize(sim.records)
    summary.partial = partial
    print(format_summary_table(summary))
    failed: list[str] = []
    done = {"trace": "trace   -> {} (open in https://ui.perfetto.dev)", "metrics": "metrics -> {}",
            "summary_json": "summary -> {}"}
    for field, path in outputs.items():
        try:
            if field == "summary_json":
                write_json(path, summary_to_json(summary), field)
            elif isinstance(sinks[field], TinyServeError):
                raise sinks[field]
            else:
                sinks[field].close()
            print(done[field].format(path))
        except TinyServeError as e:
            failed.append(f"tinyserve simulate: error: not written: {e}")
    pub = sinks.get("kv_events")
    if pub is not None and not isinstance(pub, TinyServeError):
        pub.close()
        print(f"kv events -> {pub.endpoint} ({pub.batches} batches)")
    for line in failed:
        print(line, file=sys.stderr)
    if partial:
        print("interrupted: the outputs hold the steps run so far", file=sys.stderr)
        return 130
    return 1 if failed else 0
