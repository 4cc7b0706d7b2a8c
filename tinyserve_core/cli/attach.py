"""`tinyserve attach`: watch a vLLM or SGLang server's prefix cache through the KV-cache
events its ranks publish (and its Prometheus metrics), or replay a recording of them.

Enable them on the server with
  --kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
                       "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558"}'
then e.g.  tinyserve attach --kv-events tcp://HOST:5557 --replay tcp://HOST:5558
                            --metrics-url http://HOST:8000/metrics --summary-json s.json
Runs until --duration or Ctrl-C; either way the summary is printed and written."""

from __future__ import annotations

import argparse
import sys
import time

from ._parser import nonneg_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("attach", help="watch a vLLM/SGLang server's KV cache (events + metrics)",
                       description=__doc__)
    p.add_argument("--kv-events", action="append", default=[], metavar="URL",
                   help="a server's event endpoint (repeatable, one per server)")
    p.add_argument("--data-parallel-size", type=positive_int("--data-parallel-size"), default=1,
                   metavar="N", help="ranks per server: each URL expands to ports port..port+N-1")
    p.add_argument("--replay", action="append", default=[], metavar="URL",
                   help="replay endpoint, paired in order with --kv-events (expanded the same way)")
    p.add_argument("--topic", default="", help="topic filter (the server's kv-events topic)")
    p.add_argument("--bind", action="store_true",
                   help="bind the endpoints (for servers whose publisher connects to a concrete host)")
    p.add_argument("--metrics-url", action="append", default=[], metavar="URL",
                   help="Prometheus endpoint, e.g. http://HOST:8000/metrics (repeatable)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="tokenizer folder: print the deepest chain's text")
    p.add_argument("--duration", type=nonneg_float("--duration"), default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--record", default=None, metavar="FILE", help="record every frame received here")
    p.add_argument("--summary-json", default=None, metavar="FILE", help="write the summary JSON here")
    p.add_argument("--from-recording", default=None, metavar="FILE",
                   help="replay a recording instead of attaching to a server")
    p.add_argument("--speed", type=nonneg_float("--speed"), default=0.0, metavar="X",
                   help="recording replay speed (x real time; 0 = as fast as possible)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="export the recording (--record or --from-recording) as a Perfetto trace")
    p.set_defaults(func=run)


def _check(args) -> dict[str, str]:
    from ..errors import ConfigError
    from ..writers import check_writable

    if bool(args.kv_events) == bool(args.from_recording):
        raise ConfigError("kv_events", "give --kv-events URL (live) or --from-recording FILE, one of them")
    if args.from_recording and (args.record or args.replay or args.metrics_url or args.bind):
        raise ConfigError("from_recording", "replays a recording: --record, --replay, --metrics-url "
                          "and --bind apply to a live server")
    if args.trace and not (args.record or args.from_recording):
        raise ConfigError("trace", "is exported from a recording: add --record FILE")
    outs: dict[str, str] = {}
    seen = {}
    for field in ("record", "summary_json", "trace"):
        path = getattr(args, field)
        if path:
            target = check_writable(path, field)
            if target in seen:
                raise ConfigError(field, f"{path} is also the {seen[target]} output")
            seen[target] = field
            outs[field] = path
    return outs


def run(args: argparse.Namespace) -> int:
    from .simulate import _StopOnSignal

    outs = _check(args)
    tokenizer = None
    if args.tokenizer:
        from ..model.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_dir(args.tokenizer)
    with _StopOnSignal() as stop:
        if args.from_recording:
            summary, model = _replay(args, stop)
        else:
            summary, model = _live(args, stop)
    _print(summary, model, tokenizer)
    _write(args, outs, summary)
    return 0


def _progress(desc: str):
    from tqdm import tqdm
    return tqdm(desc=desc, unit="batch", file=sys.stderr, dynamic_ncols=True)


def _live(args, stop):
    from ..attach.session import Attachment
    from ..attach.subscriber import expand_endpoints

    endpoints = expand_endpoints(args.kv_events, args.replay, args.data_parallel_size)
    att = Attachment(endpoints, topic=args.topic, bind=args.bind, metrics_urls=args.metrics_url,
                     record=args.record)
    end = None if args.duration is None else time.monotonic() + args.duration
    bar = _progress("attach")
    try:
        while not stop.requested and (end is None or time.monotonic() < end):
            att.poll(50)
            n = sum(s.stats.batches for s in att.streams)
            bar.update(n - bar.n)
            states = ",".join(sorted({s.stats.state for s in att.streams}))
            bar.set_postfix_str(f"live={att.model.blocks_live} {states}", refresh=False)
    except KeyboardInterrupt:
        pass                               # a second Ctrl-C: still write what we have
    except BaseException:
        bar.close()
        att.abort()
        raise
    bar.close()
    summary = att.summary()
    att.close()
    return summary, att.model


def _replay(args, stop):
    from ..attach.cache_model import CacheModel
    from ..attach.recording import load_recording, play
    from ..attach.session import build_summary

    rec = load_recording(args.from_recording)
    model = CacheModel()
    bar = _progress("replay")
    bar.total = len(rec.messages)
    try:
        streams = play(rec, model, speed=args.speed, stop=lambda: stop.requested,
                       on_message=lambda m: bar.update(1))
    finally:
        bar.close()
    return build_summary(rec.endpoints, streams, model, []), model


def _print(summary: dict, model, tokenizer) -> None:
    ev = summary["events"]
    rows = [
        ("endpoints", ", ".join(summary["endpoints"])),
        ("batches", summary["batches"]), ("replayed batches", summary["replayed_batches"]),
        ("events", " ".join(f"{k}={v}" for k, v in ev.items())),
        ("malformed", summary["malformed"]), ("gaps", summary["gaps"]),
        ("live blocks", summary["blocks_live"]), ("tree roots", summary["tree_roots"]),
        ("max chain depth", summary["max_chain_depth"]),
        ("by rank", " ".join(f"{r}:{v['blocks_live']}" for r, v in summary["by_rank"].items())),
        ("by medium", " ".join(f"{k}:{v}" for k, v in summary["by_medium"].items()) or "-"),
    ]
    for k, v in summary["metrics"].items():
        rows.append((k, "-" if v is None else f"{v:.4g}"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    if tokenizer is not None and summary["blocks_live"]:
        bm = model.block_map()
        deepest = int(bm.slot[int(bm.depth.argmax())])
        ids = model.chain_tokens(deepest)
        text = "(tokens not kept)" if ids is None else repr(tokenizer.decode(ids)[:200])
        print(f"{'deepest chain':<{w}}  {text}")


def _write(args, outs: dict[str, str], summary: dict) -> None:
    from ..writers import write_json

    if "summary_json" in outs:
        write_json(outs["summary_json"], summary, "summary_json")
        print(f"summary -> {outs['summary_json']}")
    if "record" in outs:
        print(f"record  -> {outs['record']}")
    if "trace" in outs:
        from ..attach.recording import export_perfetto, load_recording
        n = export_perfetto(load_recording(args.from_recording or outs["record"]), outs["trace"])
        print(f"trace   -> {outs['trace']} ({n} events; open in https://ui.perfetto.dev)")
