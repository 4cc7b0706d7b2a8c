"""`tinyserve bench …`: benchmarks that print a table and write JSON.

The measuring lives in tinyserve_core.bench; this module parses flags, shows progress
and prints. The Qt benchmarks live under `app/bench` and are registered by module
name, resolved at parser-build time: the Qt-free core never imports `app` (an
import-linter contract checks it), and a machine without PySide6 gets every other
benchmark."""

from __future__ import annotations

import sys

from ..writers import check_writable, write_json
from ._parser import Parser, add_from_module, optional, positive_int

# name -> (module, the third-party package it needs)
QT_BENCHES = {
    "gui": ("app.bench.serving_gui", "PySide6"),
    "scene-gui": ("app.bench.scene_gui", "PySide6"),
    "attach-gui": ("app.bench.attach_gui", "PySide6"),
}


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print a table, write JSON)",
                       description="Benchmarks: each prints a table and writes JSON.")
    what = p.add_subparsers(dest="bench_what", metavar="WHAT", parser_class=Parser)
    what.required = True
    optional(lambda: _add_engine(what))
    optional(lambda: _add_kernels(what))
    add_from_module(what, *QT_BENCHES["gui"])
    optional(lambda: _add_decode(what))
    optional(lambda: _add_kv(what))
    optional(lambda: _add_attach(what))
    add_from_module(what, *QT_BENCHES["scene-gui"])
    optional(lambda: _add_scene(what))
    add_from_module(what, *QT_BENCHES["attach-gui"])


def _write_results(args, res) -> int:
    """The results JSON when --json asks for it (its path was checked before the run)."""
    if args.json:
        write_json(args.json, res, "--json")
        print(f"json -> {args.json}")
    return 0


# ---- engine ------------------------------------------------------------------------------

def _add_engine(sub) -> None:
    from ..bench import engine  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("engine", help="our engine vs Hugging Face generate() (tokens/s)", description=engine.__doc__)
    p.add_argument("--model", default=None, help="HF checkpoint folder (None: the shipped model)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where both systems run")
    p.add_argument("--requests", type=int, default=16, help="requests per scenario")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (uniform scenario)")
    p.add_argument("--max-tokens", type=int, default=64, help="generated tokens (uniform scenario)")
    p.add_argument("--rate", type=float, default=8.0, help="Poisson arrivals per second")
    p.add_argument("--seed", type=int, default=0, help="seed of prompts and arrivals")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each static batch per system (the median is reported)")
    p.add_argument("--overload-requests", type=int, default=256,
                   help="requests of the stream the engine cannot keep up with (0: leave that row out)")
    p.add_argument("--overload-rate", type=float, default=1000.0, help="its arrivals per second")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both systems (None: torch's choice)")
    p.add_argument("--no-peer", action="store_true",
                   help="our engine's rows only (the serving configurations and the overload), no HF")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run_engine)


def run_engine(args) -> int:
    import torch

    from ..bench.engine import compare_with_hf
    from ..errors import ConfigError

    if args.json:
        check_writable(args.json, "--json")     # before the benchmark, not after it
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", f"must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.overload_requests < 0 or args.overload_rate <= 0:
        raise ConfigError("overload_requests" if args.overload_requests < 0 else "overload_rate",
                          "must be >= 0 requests at a rate > 0")
    if args.repeats < 1:
        raise ConfigError("repeats", f"must be >= 1, got {args.repeats}")
    overload = (args.overload_requests, args.overload_rate) if args.overload_requests else None
    res = compare_with_hf(args.model, args.device, args.requests, args.prompt_len, args.max_tokens,
                          args.rate, args.seed, overload, peer=not args.no_peer, repeats=args.repeats)
    print(f"\nengine benchmark on {res.machine}; model {res.model}; {args.requests} requests; "
          f"uniform = {args.prompt_len} prompt + {args.max_tokens} generated tokens each, mixed = "
          f"lognormal lengths up to 4x that; greedy, EOS ignored, {res.dtype}")
    print(format_engine_rows(res.rows))
    if args.json:
        write_json(args.json, res.to_json(), "--json")
        print(f"json -> {args.json}")
    # fp32 (the CPU) must give HF's tokens exactly; fp16 kernels of two systems part at
    # near-ties, which the table's "identical" and "1st diff" columns report instead.
    if res.dtype != str(torch.float32):
        return 0
    return 0 if all(r.outputs_match for r in res.rows if r.outputs_match is not None) else 1


def format_engine_rows(rows) -> str:
    """The side-by-side scenarios (ours, then HF: speed-up, identical outputs, mean
    first difference), then every row of ours with latencies, host ms/step, GPU busy and
    (serving configurations) its time against plain quest on the same workload."""
    from ..bench.engine import cost_vs_quest
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    cost = cost_vs_quest(rows)
    peers = [(a, b) for a, b in zip(rows, rows[1:]) if a.system == "tinyserve" and b.system != "tinyserve"]
    out = [f"{'scenario':<38} {'system':<12} {'seconds':>8} {'tok/s':>9} {'speed-up':>8} "
           f"{'identical':>9} {'1st diff':>8}"] if peers else []
    for a, b in peers:
        for r in (a, b):
            speed = f"{a.tokens_per_s / b.tokens_per_s:.2f}x" if r is a else ""
            out.append(f"{r.scenario:<38} {r.system:<12} {r.seconds:>8.2f} {r.tokens_per_s:>9.1f} {speed:>8} "
                       f"{f(None if r.identical_share is None else 100 * r.identical_share, '.0f') + '%':>9} "
                       f"{f(r.first_diff_mean, '.1f'):>8}")
    if peers:
        out.append("")
    out.append(f"{'tinyserve scenario':<38} {'tok/s':>9} {'TTFT p50/p99 ms':>17} {'TPOT p50/p99 ms':>17} "
               f"{'host ms/step':>12} {'GPU busy':>8} {'vs quest':>8}")
    for r in rows:
        if r.serving is None:
            continue
        v = r.serving
        out.append(f"{r.scenario:<38} {r.tokens_per_s:>9.1f} "
                   f"{f(v['ttft_p50_ms'], '.1f') + ' / ' + f(v['ttft_p99_ms'], '.1f'):>17} "
                   f"{f(v['tpot_p50_ms'], '.2f') + ' / ' + f(v['tpot_p99_ms'], '.2f'):>17} "
                   f"{f(v['host_ms_per_step'], '.3f'):>12} {f(v['device_busy_pct'], '.0f') + '%':>8} "
                   f"{f(cost.get(r.scenario), '.2f') + 'x' if r.scenario in cost else '':>8}")
    spread = [r for r in rows if r.serving is not None and r.serving.get("runs_tok_per_s")]
    if spread:
        out.append("  static rows: median of " + str(len(spread[0].serving["runs_tok_per_s"])) +
                   " runs each, in turn; tok/s of the runs: " + "; ".join(
                       f"{r.scenario.split(', ', 1)[1]} " + " / ".join(f"{x:,.0f}" for x in r.serving["runs_tok_per_s"])
                       for r in spread))
    for r in rows:
        if r.serving is not None and "profile_charged_pct" in r.serving:
            out.append(f"  {r.scenario}: profiling charged {r.serving['profile_charged_pct']:.2f}% of the run "
                       f"({r.serving['breakdowns']} sampled breakdowns)")
    return "\n".join(out)


# ---- kernels -----------------------------------------------------------------------------

def _add_kernels(sub) -> None:
    from ..bench import kernels  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("kernels", help="CUDA kernels vs their floor (copy bandwidth) and peers",
                       description=kernels.__doc__)
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per figure (median)")
    p.add_argument("--quick", action="store_true", help="fewer shapes (smoke run)")
    p.add_argument("--no-peers", action="store_true", help="skip FlashInfer and SDPA")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="print the tables of an earlier run's JSON (no GPU needed)")
    p.add_argument("--only", choices=("decode", "sparse", "score", "cache", "alloc", "fp8"), action="append",
                   help="run only these sections (repeatable; None: all but fp8, the FP8 KV-cache rows)")
    p.set_defaults(func=run_kernels)


def _kernels_report(res: dict) -> str:
    from ..bench.kernels import report

    text = report(res)
    if res.get("score"):
        from ..bench.kernels_score import report_score

        text += "\n" + report_score(res["score"], res["copy_bw_gbps"])
    if res.get("fp8"):
        from ..bench.kernels_fp8 import report_fp8

        text += "\n" + report_fp8(res["fp8"], res["copy_bw_gbps"])
    return text


def run_kernels(args) -> int:
    import torch

    from ..bench.kernels import measure_kernels

    if args.report:
        from ..loaders import MiB, FileContext, load_json

        res = load_json(args.report, max_bytes=64 * MiB, field="report")
        try:
            text = _kernels_report(res)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise FileContext(args.report).error("report", f"not a bench-kernels JSON file ({e!r})") from None
        print(text)
        return 0
    if not torch.cuda.is_available():
        print("tinyserve bench kernels: needs a CUDA GPU (none found)", file=sys.stderr)
        return 2
    if args.json:
        check_writable(args.json, "--json")
    from tqdm import tqdm

    progress = lambda it, desc: tqdm(it, desc=desc, file=sys.stderr)  # noqa: E731
    res = measure_kernels(args.reps, args.quick, not args.no_peers, args.only,
                          log=lambda line: print(line, flush=True), progress=progress)
    if not args.only or "score" in args.only:
        from ..bench.kernels_score import measure_score

        res["score"] = measure_score(args.reps, res["copy_bw_gbps"], args.quick)
    if args.only and "fp8" in args.only:  # the FP8 KV-cache rows: only when asked for
        from ..bench.kernels_fp8 import measure_fp8

        res["fp8"] = measure_fp8(args.reps, res["copy_bw_gbps"], args.quick, progress, not args.no_peers)
    print(_kernels_report(res))
    return _write_results(args, res)


# ---- decode ------------------------------------------------------------------------------

def _add_decode(sub) -> None:
    from ..bench import decode

    p = sub.add_parser("decode", help="decode step time at long context: quest and twostage vs dense", description=decode.__doc__)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--context", type=int, nargs="+", default=None,
                   help="context lengths (None: 8192 16384 32768 on a GPU, 1024 2048 on a CPU)")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch sizes (None: 1 16 64 on a GPU, 1 4 on a CPU)")
    p.add_argument("--budget", type=int, default=2048, help="quest budget in tokens")
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the model")
    p.add_argument("--shape", default="serving", choices=sorted(decode.SHAPES),
                   help="model shape: serving = GQA 32/8, head_dim 128; tiny = a quick CPU check")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--reps", type=int, default=20, help="timed decode steps per point (median)")
    p.add_argument("--candidates", type=float, default=4.0, help="twostage: stage-1 candidates per budget page")
    p.add_argument("--quant-bits", type=int, default=4, choices=(8, 4), help="twostage: bits of its key copy")
    p.add_argument("--twostage-bound", default="copy", choices=("copy", "exact"),
                   help="twostage's stage 1: over its int8 bound copy (copy) or quest's fp16 bound (exact)")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile one eager step per point: GEMM, attention, selection, elementwise, host gap")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run_decode)


def run_decode(args) -> int:
    from ..bench.decode import measure_decode
    from ..bench.decode_floor import floor_table as decode_floor_table

    if args.json:
        check_writable(args.json, "--json")
    def progress(r):
        print(f"  ctx {r['context']:>6} batch {r['batch']:>3}: dense {r['dense_ms']:.2f} ms, "
              f"quest {r['quest_ms']:.2f} ms, twostage {r['twostage_ms']:.2f} ms", file=sys.stderr)

    res = measure_decode(args.device, args.context, args.batch, args.budget, args.layers, args.shape,
                         args.block_size, args.reps, progress, args.candidates, args.quant_bits, args.breakdown,
                         args.twostage_bound == "copy")
    m = res["model"]
    print(f"\ndecode step, {args.layers}-layer Llama (GQA {m['heads']}/{m['kv_heads']}, "
          f"head_dim {m['head_dim']}, hidden {m['hidden']}), "
          f"{res['dtype']}, block {res['block_size']}, quest budget {args.budget} tokens (all layers), "
          f"on {res['machine']}")
    stage1 = "the int8 bound copy" if args.twostage_bound == "copy" else "quest's bound"
    print(f"twostage: candidates {args.candidates:g}x the budget, int{args.quant_bits} keys, {stage1} in stage 1, "
          "same pages as quest; "
          "ratio = twostage / quest, both replayed from CUDA graphs on a GPU (eager columns beside)")
    print("fp8 = the dense step over an FP8 (e4m3) KV cache of the same prefill (kv_cache_dtype fp8), "
          "quest fp8 = quest's step over it (its page bounds as codes); x = the fp16 cache's step / the fp8 one")
    print(f"{'context':>8} {'batch':>6} {'dense ms':>9} {'quest ms':>9} {'speed-up':>9} {'twostage':>9} "
          f"{'ratio':>6} {'quest eager':>12} {'two eager':>10} {'fp8 ms':>8} {'fp8 x':>6} {'quest fp8':>10} "
          f"{'x':>6}")
    for r in res["rows"]:
        print(f"{r['context']:>8} {r['batch']:>6} {r['dense_ms']:>9.2f} {r['quest_ms']:>9.2f} "
              f"{r['speedup']:>8.2f}x {r['twostage_ms']:>9.2f} {r['twostage_vs_quest']:>5.2f}x "
              f"{r['quest_eager_ms']:>12.2f} {r['twostage_eager_ms']:>10.2f} "
              f"{r['dense_fp8_ms']:>8.2f} {r['fp8_speedup']:>5.2f}x {r['quest_fp8_ms']:>10.2f} "
              f"{r['quest_fp8_speedup']:>5.2f}x")
    print(decode_floor_table(res, args.breakdown))
    if args.json:
        keys = ("machine", "torch", "dtype", "layers", "shape", "block_size", "budget", "copy_bandwidth_gbs",
                "twostage", "rows")
        write_json(args.json, {k: res[k] for k in keys}, "--json")
    return 0


# ---- kv ----------------------------------------------------------------------------------

def _add_kv(sub) -> None:
    from ..bench import kv

    p = sub.add_parser("kv", help="block manager op costs, snapshot cost, memory waste", description=kv.__doc__)
    p.add_argument("--num-blocks", type=int, default=131072, help="blocks in the timed pool")
    p.add_argument("--block-size", type=int, default=16, help="tokens per block")
    p.add_argument("--seqs", type=int, default=2000, help="live sequences during the op timings")
    p.add_argument("--prompt-len", type=int, default=300, help="prompt tokens per live sequence")
    p.add_argument("--requests", type=int, default=400, help="requests per waste workload")
    p.add_argument("--seed", type=int, default=0, help="seed of prompts and workloads")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run_kv)


def run_kv(args) -> int:
    from tqdm import tqdm

    from ..bench.kv import measure_kv

    if args.json:
        check_writable(args.json, "--json")
    res = measure_kv(args.num_blocks, args.block_size, args.seqs, args.prompt_len, args.requests, args.seed,
                     progress=lambda total, desc, unit: tqdm(total=total, desc=desc, unit=unit))
    ops, ops_big, waste = res["ops"], res["ops_4x_pool"], res["waste"]
    sizes = (args.num_blocks, 4 * args.num_blocks)
    print(f"\nkv benchmark on {res['machine']}; {args.num_blocks} blocks x {args.block_size} tokens, "
          f"{args.seqs} live seqs of {args.prompt_len} tokens")
    print(f"{'operation (us/call)':<34} {sizes[0]:>10} {sizes[1]:>10} {'ratio':>6}")
    for k, v in ops.items():
        if k.endswith("_us"):
            print(f"{k[:-3]:<34} {v:>10.2f} {ops_big[k]:>10.2f} {ops_big[k] / v:>6.2f}")
    print(f"{'construct pool (ms)':<34} {ops['construct_ms']:>10.1f} {ops_big['construct_ms']:>10.1f}")
    print(f"snapshot: incremental arrays are {res['snapshot_speedup_vs_rebuild']:.0f}x faster than "
          "rebuilding from blocks")
    print(f"\n{'workload':<50} {'bs':>4} {'waste':>7} {'static':>7} {'peak':>6} {'hit':>6} {'preempt':>8}")
    for name, w in waste.items():
        print(f"{name:<50} {w['block_size']:>4} {w['mean_waste']:>7.2%} {w['reserved_waste']:>7.2%} "
              f"{w['peak_usage']:>6.1%} {w['prefix_hit_rate']:>6.1%} {w['preemptions']:>8}")
    print("waste = empty slots / allocated slots of used blocks, mean over steps; "
          "static = the same with max_model_len (2048) reserved per request")
    return _write_results(args, res)


# ---- attach ------------------------------------------------------------------------------

def _add_attach(sub) -> None:
    from ..bench import attach

    p = sub.add_parser("attach", help="KV-event subscriber: events/s, latency, memory per block",
                       description=attach.__doc__)
    sizes = (("--batches", 2000, "batches in the throughput run (8 chains of 16 blocks; "
                                 "evictions past 50,000 live)"),
             ("--latency-batches", 2000, "batches in the latency run (500/s)"),
             ("--blocks", 1_000_000, "live blocks in the memory run"))
    for flag, default, text in sizes:
        p.add_argument(flag, type=positive_int(flag), default=default, help=text)
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run_attach)


def run_attach(args) -> int:
    from tqdm import tqdm

    from ..bench.attach import latency, memory, throughput
    from ..bench.machine import cpu_model

    if args.json:
        check_writable(args.json, "--json")
    bar = tqdm(total=3, desc="bench attach", file=sys.stderr)
    try:
        tp = throughput(n_batches=args.batches)
        bar.update(1)
        lt = latency(n_batches=args.latency_batches)
        bar.update(1)
        mem = memory(num_blocks=args.blocks)
        bar.update(1)
    finally:
        bar.close()
    res = {"machine": cpu_model(), "throughput": tp, "latency": lt, "memory": mem}
    print(f"\nattach benchmark on {res['machine']}")
    print(f"{'measure':<44} {'value':>14}")
    rows = [
        (f"block events/s decoded + applied ({tp['block_events']} events)", f"{tp['block_events_per_s']:,.0f}"),
        ("  dropped / gaps / malformed", f"{tp['dropped']} / {tp['gaps']} / {tp['malformed']}"),
        (f"publish -> applied p50 ({lt['rate_per_s']:.0f} batches/s)", f"{lt['p50_ms']:.2f} ms"),
        ("publish -> applied p95", f"{lt['p95_ms']:.2f} ms"),
        (f"memory per live block ({mem['blocks_live']:,} live)", f"{mem['bytes_per_block']:.0f} B"),
        ("block_map() snapshot", f"{mem['block_map_ms']:.1f} ms"),
        ("forest_counts() (roots, depth)", f"{mem['forest_counts_ms']:.1f} ms"),
    ]
    for k, v in rows:
        print(f"{k:<44} {v:>14}")
    return _write_results(args, res)


# ---- scene -------------------------------------------------------------------------------

def _add_scene(sub) -> None:
    from ..eval import scene  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("scene", help="scene lab frames: bake and motion render latency, fast vs every-pixel PSNR",
                       description="Scene lab frame latency over 20 orbit poses (bake and motion quality), with "
                                   "the adaptive frame's PSNR and label agreement against the every-pixel frame.")
    p.add_argument("--scene", default="room", help="scene name under assets/scenes or a .json path")
    p.add_argument("--sizes", default="256", help="comma-separated frame sides in pixels (e.g. 256,512)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where frames are rendered")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run_scene)


def run_scene(args) -> int:
    import os

    import torch
    from tqdm import tqdm

    from ..errors import ConfigError
    from ..eval.scene import render_latency
    from ..scene.lab import SceneLab

    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        raise ConfigError("--sizes", f"expected comma-separated integers, got {args.sizes!r}") from None
    if not sizes or not all(16 <= n <= 2048 for n in sizes):
        raise ConfigError("--sizes", f"each side must lie in [16, 2048] pixels, got {args.sizes!r}")
    if args.threads < 0:
        raise ConfigError("--threads", f"must be >= 0, got {args.threads}")
    if args.json:
        check_writable(args.json, "--json")
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = SceneLab(args.scene, device=args.device)
    rows = [render_latency(lab, n) for n in tqdm(sizes, desc="bench scene", unit="size", file=sys.stderr)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nscene {lab.spec.name}: frames on {lab.device}, torch threads {torch.get_num_threads()}, "
          f"1-min load avg {load:.1f}")
    print(f"{'frame':<16} {'p50 ms':>8} {'p95 ms':>8}   fast vs every-pixel frame")
    for n, r in zip(sizes, rows):
        for q in ("bake", "motion"):
            extra = (f"{r['bake_vs_every_pixel_psnr']:.1f} dB, labels {r['bake_vs_every_pixel_labels'] * 100:.2f}%"
                     if q == "bake" else f"vs the bake frame: {r['motion_vs_bake_psnr']:.1f} dB, labels "
                                         f"{r['motion_vs_bake_labels'] * 100:.2f}%")
            print(f"{q + f' {n}x{n}':<16} {r[f'{q}_{n}_p50_ms']:>8.1f} {r[f'{q}_{n}_p95_ms']:>8.1f}   {extra}")
        if "bake_vs_reference_psnr" in r:
            print(f"  against the 1/8-voxel reference frame ({n}x{n}, 3 poses): fast "
                  f"{r['bake_vs_reference_psnr']:.1f} dB, labels {r['bake_vs_reference_labels'] * 100:.2f}%; "
                  f"every-pixel {r['every_pixel_vs_reference_psnr']:.1f} dB, "
                  f"labels {r['every_pixel_vs_reference_labels'] * 100:.2f}%")
    return _write_results(args, {"scene": lab.spec.name, "device": str(lab.device), "load_avg_1m": load,
                                 "torch_threads": torch.get_num_threads(), "sizes": sizes, "results": rows})
