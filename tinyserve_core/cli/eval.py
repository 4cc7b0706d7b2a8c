"""`tinyserve eval lm | selection | scene`: quality evaluations, their flags and printing."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..writers import check_writable, write_json, write_text
from ._parser import Parser, optional


def register(sub) -> None:
    p = sub.add_parser("eval", help="quality evaluations", description="Quality evaluations.")
    what = p.add_subparsers(dest="eval_what", metavar="WHAT", parser_class=Parser)
    what.required = True
    optional(lambda: _add_lm(what))
    optional(lambda: _add_selection(what))
    optional(lambda: _add_scene(what))


# ---- lm ----------------------------------------------------------------------------------

def _add_lm(sub) -> None:
    from ..model.train import evaluate  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("lm", help="held-out perplexity, pass-key retrieval and samples of a language model",
                       description="The train-lm evaluation on any model folder (the held-out files are "
                                   "re-tokenized with the model's own tokenizer).")
    p.add_argument("--model", default=None, help="HF checkpoint folder (None: the shipped model)")
    p.add_argument("--docs-root", default=None,
                   help="Python docs sources to split again (None: the shipped held-out doc files, "
                        "the same on every host)")
    p.add_argument("--stdlib-root", default=None, help="stdlib sources (None: /usr/lib/python3.11)")
    p.add_argument("--heldout-frac", type=float, default=0.05, help="the training run's held-out fraction")
    p.add_argument("--n-passkey", type=int, default=200, help="pass-key samples per length")
    p.add_argument("--passkey-lengths", default="1024,2048", help="pass-key prompt lengths, comma list")
    p.add_argument("--context", type=int, default=None, help="window for held-out loss (None: min(model, 2048))")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--json", default="out/eval-lm.json", help="where to write the results")
    p.set_defaults(func=run_lm)


def run_lm(args) -> int:
    import numpy as np

    from ..errors import ConfigError
    from ..model.loader import default_model_dir, load_model
    from ..model.train import corpus
    from ..model.train.evaluate import evaluate_model, format_eval_table, write_eval
    from ..model.train.passkey import PasskeyTemplate
    from ..model.train.train_lm import resolve_device

    check_writable(args.json, "--json", make_parents=True)    # before the evaluation, not after it
    if args.n_passkey < 1:
        raise ConfigError("--n-passkey", f"must be positive, got {args.n_passkey}")
    try:
        lengths = tuple(int(x) for x in str(args.passkey_lengths).split(",") if x)
    except ValueError:
        raise ConfigError("--passkey-lengths", f"expected comma-separated integers, got {args.passkey_lengths!r}") from None
    device = resolve_device(args.device)
    folder = Path(args.model) if args.model else default_model_dir()
    model, tokenizer = load_model(folder, device=device)
    tok = tokenizer.tokenizer
    max_ctx = model.config.max_position_embeddings
    context = args.context or min(max_ctx, 2048)
    if context > max_ctx:
        raise ConfigError("--context", f"{context} exceeds the model's max_position_embeddings {max_ctx}")
    if args.docs_root is None:   # never what this host has under /usr/share/doc
        code = [d for d in corpus.collect_code(args.stdlib_root) if corpus.is_heldout(d.name, args.heldout_frac)]
        split = {"heldout_docs": corpus.shipped_heldout_documents(args.heldout_frac), "heldout_code": code}
    else:
        split = corpus.split_documents(corpus.collect_documents(args.docs_root, args.stdlib_root),
                                       args.heldout_frac)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    data = {k: corpus.tokenize_documents(tok, split[k], eos, desc=k).astype(np.int64)
            for k in ("heldout_docs", "heldout_code") if split[k]}
    try:
        PasskeyTemplate(tok)
    except ConfigError as e:
        print(f"pass-key test skipped: {e}", file=sys.stderr)
        lengths = ()
    ev = evaluate_model(model, tok, data, device, context=context, passkey_lengths=lengths,
                        n_passkey=args.n_passkey, eos_id=tokenizer.eos_token_id, bf16=args.bf16)
    ev["model"] = str(folder)
    write_eval(ev, args.json)
    print(format_eval_table(ev))
    print(f"wrote {args.json}")
    return 0


# ---- selection ---------------------------------------------------------------------------

QUICK_JSON = "out/eval-selection-quick.json"
QUICK_PLOTS = "out/eval-selection-quick"

def _add_selection(sub) -> None:
    from ..engine.config import KV_CACHE_DTYPES
    from ..eval import selection as ev

    p = sub.add_parser("selection", help="accuracy of page-selection policies vs dense",
                       description=ev.__doc__)
    p.add_argument("--model", default=None, help="model folder (None: the shipped model)")
    p.add_argument("--json", default=None, help="write every result here")
    p.add_argument("--md", default=None, help="write the Markdown table and target verdicts here")
    p.add_argument("--plots", default=None, help="folder for accuracy-vs-budget PNGs")
    p.add_argument("--quick", action="store_true",
                   help=f"small smoke run, no verdicts; writes {QUICK_JSON} and {QUICK_PLOTS}/ unless "
                        "--json / --plots say where")
    p.add_argument("--policies", default=None, help=f"comma list (None: {','.join(ev.ALL_POLICIES)})")
    p.add_argument("--budgets", default=None,
                   help=f"comma list of tokens or fractions (None: {','.join(ev.TARGET_BUDGETS)}; "
                        f"the sweep: {','.join(ev.FULL_BUDGETS)})")
    p.add_argument("--block-sizes", default=None, help="comma list (None: 8,16,32)")
    p.add_argument("--context", type=int, default=None, help="tokens per text window (None: 2048; quick 1024)")
    p.add_argument("--decode-tokens", type=int, default=None,
                   help="teacher-forced decode steps per text sample (None: 64; quick 32)")
    p.add_argument("--text-samples", type=int, default=None, help="held-out text windows (None: 4; quick 2)")
    p.add_argument("--passkey-samples", type=int, default=None,
                   help="pass-key samples per length (None: 200; quick 6)")
    p.add_argument("--passkey-lengths", default=None,
                   help="pass-key prompt lengths, comma list (None: 1024,2048; quick 1024)")
    p.add_argument("--decode-json", default=None,
                   help="a `tinyserve bench decode --json` result: its 32K-context step times join the table")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="evaluate nothing: join the --json results of runs split by --block-sizes (e.g. "
                        "side by side on one GPU) and report them as one run")
    p.add_argument("--top-p", default=None,
                   help="mass targets of adaptive, twostage (besides its fixed form) and oracle_p, "
                        "comma list (None: 0.95,0.99; quick 0.99)")
    p.add_argument("--dense-layers", type=int, default=None, help="first layers left dense (None: 2)")
    p.add_argument("--sink-pages", type=int, default=None,
                   help="attention-sink pages every sparse policy keeps (None: each policy's own)")
    p.add_argument("--twostage-candidates", type=float, default=None,
                   help="twostage: stage-1 candidates as a multiple of the budget (None: 4)")
    p.add_argument("--twostage-bits", type=int, default=None, help="twostage: bits of its key copy, 8 or 4 (None: 4)")
    p.add_argument("--twostage-candidate-top-p", type=float, default=None,
                   help="twostage: keep the fewest candidates whose bound softmax reaches this mass, at most "
                        "--twostage-candidates x the budget (None: 0 = always that many)")
    p.add_argument("--twostage-bound", default=None, choices=("copy", "exact"),
                   help="twostage's stage-1 bound: its int8 copy of the page bounds, rounded outward (copy), "
                        "or quest's fp16 bound (exact) (None: copy)")
    p.add_argument("--tier-factors", default=None,
                   help="fast-tier sizes to replay, as multiples of the mean pages selected (None: 2,4; '' = none)")
    p.add_argument("--data-dir", default=None, help="train-lm corpus folder with heldout_docs.npy")
    p.add_argument("--heldout-frac", type=float, default=0.05, help="the training run's held-out fraction")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--dtype", default="float32", choices=tuple(ev.DTYPES),
                   help="model and KV cache dtype (the CUDA attention kernels serve fp16/bf16)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES,
                   help="auto: the cache in --dtype; fp8 / fp8_e4m3: an e4m3 cache with a scale per page and "
                        "kv-head, the engine's kv_cache_dtype (policies that read only page bounds)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1: these per-sequence ops are small, extra threads only spin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pass-key samples")
    p.set_defaults(func=run_selection)


def _csv(field, value, conv):
    from ..errors import ConfigError

    try:
        return tuple(conv(x.strip()) for x in value.split(",") if x.strip())
    except ValueError:
        raise ConfigError(field, f"expected a comma-separated list, got {value!r}") from None


def spec_from_args(args):
    from ..eval.selection import EvalSpec

    spec = EvalSpec.quick() if args.quick else EvalSpec()
    if args.policies:
        spec.policies = _csv("--policies", args.policies, str)
    if args.budgets:
        spec.budgets = _csv("--budgets", args.budgets, str)
    if args.block_sizes:
        spec.block_sizes = _csv("--block-sizes", args.block_sizes, int)
    if args.tier_factors is not None:
        spec.tier_factors = _csv("--tier-factors", args.tier_factors, float)
    if args.top_p is not None:
        spec.top_ps = _csv("--top-p", args.top_p, float)
    if args.passkey_lengths is not None:
        spec.passkey_lengths = _csv("--passkey-lengths", args.passkey_lengths, int)
    for name in ("context", "decode_tokens", "text_samples", "passkey_samples", "dense_layers", "sink_pages",
                 "twostage_candidates", "twostage_bits", "twostage_candidate_top_p"):
        v = getattr(args, name)
        if v is not None:
            setattr(spec, name, v)
    if args.twostage_bound is not None:
        spec.twostage_bound_copy = args.twostage_bound == "copy"
    spec.seed = args.seed
    return spec.validate()


def _evaluate(args, spec):
    """Run the evaluation: (spec, results, model folder, text source, wall seconds, run info)."""
    import torch

    from ..errors import ConfigError
    from ..eval.selection import DTYPES, evaluate, heldout_tokens, machine
    from ..kv.kv_cache import cache_dtype
    from ..model.loader import default_model_dir, load_model

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads", f"must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda requested but no CUDA device is available")
    model_dir = Path(args.model) if args.model else default_model_dir()
    dtype = DTYPES[args.dtype]
    model, tok = load_model(model_dir, device=device, dtype=dtype)
    tokens, source = heldout_tokens(tok, args.data_dir, args.heldout_frac)
    t0 = time.perf_counter()
    kv_dtype = cache_dtype(args.kv_cache_dtype, dtype)
    results = evaluate(model, tok, tokens, spec, device=device, dtype=dtype, kv_cache_dtype=kv_dtype)
    wall = time.perf_counter() - t0
    return spec, results, model_dir, source, wall, {"machine": machine(device), "device": device,
                                                     "dtype": args.dtype, "kv_cache_dtype": args.kv_cache_dtype,
                                                     "torch": torch.__version__}


def run_selection(args) -> int:
    from ..errors import ConfigError, TinyServeError
    from ..eval.selection import (attach_decode_times, check_targets, decode_step_target, markdown_table, tier_table,
                                  write_plots)

    spec = spec_from_args(args)
    if args.quick:  # the README's promise: a quick run leaves its JSON and plots behind
        args.json = args.json or QUICK_JSON
        args.plots = args.plots or QUICK_PLOTS
    for flag in ("json", "md"):
        if getattr(args, flag):
            check_writable(getattr(args, flag), f"--{flag}", make_parents=True)
    bench = None
    if args.decode_json:
        from ..loaders import load_json
        bench = load_json(args.decode_json, max_bytes=1 << 22, field="--decode-json")
        if not isinstance(bench, dict) or not isinstance(bench.get("rows"), list):
            raise ConfigError("--decode-json", f"{args.decode_json} is not a `tinyserve bench decode --json` result")
    if args.merge:
        if args.quick:
            raise ConfigError("--merge", "joins full runs; --quick runs are never judged")
        from ..eval.selection.merge import merge_results
        spec, results, merged = merge_results(args.merge)
        model_dir, source, wall = Path(merged["model"] or "?"), merged["text_source"], merged["wall_s"]
        run_info = {k: merged[k] for k in ("machine", "device", "dtype", "torch", "merged_from", "part_wall_s")}
    else:
        spec, results, model_dir, source, wall, run_info = _evaluate(args, spec)
    timing = (attach_decode_times(results, bench) if bench is not None
              else "GPU decode step at 32K: not measured here (pass --decode-json from `tinyserve bench decode`)")
    # a quick run's handful of samples judges nothing: it says so instead of met / MISSED
    quick_note = f"quick: {spec.quick_samples} samples, not a verdict" if args.quick else None
    verdicts = [] if args.quick else check_targets(results) + (decode_step_target(bench) if bench else [])
    table = markdown_table(results, digits=2 if args.quick else 3)
    tiers = tier_table(results)
    print(table)
    if tiers:
        print("\nTwo-tier page cache (selections replayed; residency accounting, no copies):\n" + tiers)
    print(timing)
    if quick_note:
        print(quick_note)
    for v in verdicts:
        met = {True: "met", False: "MISSED", None: "reported"}[v["met"]]
        print(f"- {v['target']} (block {v['block_size']}): {met}: {json.dumps(v['value'])}")
    info = {"model": str(model_dir), **run_info, "text_source": source, "decode_timing": timing,
            "verdict": quick_note, "spec": asdict(spec), "wall_s": wall}
    # each output on its own: one that fails at the end costs only itself
    failed: list[str] = []

    def attempt(fn, default=None):
        try:
            return fn()
        except (TinyServeError, OSError) as e:
            failed.append(f"tinyserve eval selection: error: not written: {e}")
            return default

    if args.json:
        if attempt(lambda: write_json(args.json, {**info, "results": [asdict(r) for r in results],
                                                  "targets": verdicts}, "--json", indent=1, make_parents=True),
                   False) is not False:
            print(f"wrote {args.json}")
    plots = attempt(lambda: write_plots(results, args.plots), []) if args.plots else []
    if plots:
        print(f"wrote {len(plots)} plots to {args.plots}")
    if args.md:
        lines = [f"# Page-selection accuracy ({model_dir.name})", "",
                 f"Machine: {info['machine']}; text: {source}; text windows of {spec.context} tokens, "
                 f"{spec.text_samples} text x {spec.decode_tokens} decode tokens, {spec.passkey_samples} pass-key "
                 f"samples at each of {', '.join(map(str, spec.passkey_lengths))} tokens; first "
                 f"{spec.dense_layers} layers dense; sink pages "
                 f"{'policy default' if spec.sink_pages is None else spec.sink_pages}; twostage "
                 f"{spec.twostage_candidates:g}x candidates"
                 + (f" (the fewest reaching bound mass {spec.twostage_candidate_top_p:g})"
                    if spec.twostage_candidate_top_p else "")
                 + f", int{spec.twostage_bits} keys, "
                 + ("the int8 bound copy" if spec.twostage_bound_copy else "quest's bound") + " in stage 1; top_p "
                 f"{', '.join(f'{p:g}' for p in spec.top_ps)} "
                 f"(adaptive, twostage p=, oracle_p; a budget is their cap). "
                 f"Wall time {wall:.0f} s"
                 + (f" (the longest of {len(run_info['part_wall_s'])} parts run by block size: "
                    f"{', '.join(f'{w:.0f}' for w in run_info['part_wall_s'])} s)." if args.merge else "."),
                 "", timing + ".", "", table, ""]
        if tiers:
            lines += ["## Two-tier page cache", "",
                      "Each run's selections (union over kv-heads per sequence and layer) replayed through a "
                      "fast tier of the given size per (sequence, layer); a miss fetches one page (K+V, all "
                      "kv-heads, cache dtype). Residency accounting: nothing is copied.", "", tiers, ""]
        lines += ["## Targets", ""]
        if quick_note:
            lines.append(quick_note)
        for v in verdicts:
            met = {True: "met", False: "**missed**", None: "reported"}[v["met"]]
            lines.append(f"- {v['target']} (block {v['block_size']}): {met} - `{json.dumps(v['value'])}`")
        # links relative to the report, so a report and its plots can move together (docs/selection/)
        md_dir = Path(args.md).resolve().parent
        lines += [""] + [f"![{Path(f).stem}]({os.path.relpath(Path(f).resolve(), md_dir)})" for f in plots]
        attempt(lambda: write_text(args.md, "\n".join(lines) + "\n", "--md", make_parents=True))
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


# ---- scene -------------------------------------------------------------------------------

def _add_scene(sub) -> None:
    from ..eval import scene  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("scene", help="evaluate the scene lab: PSNR/SSIM/mIoU, queries, planning, latency",
                       description=scene.__doc__)
    p.add_argument("--scene", default="room", help="scene name under assets/scenes or a .json path")
    p.add_argument("--queries", default=None, nargs="+",
                   help="JSONL query files (None: every set shipped with the scene, "
                        "assets/scenes/<scene>.queries[.<name>].jsonl)")
    p.add_argument("--weights", default=None,
                   help="trained weights (None: assets/scenes/<scene>.weights.safetensors)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: interactive-size work is fastest single-threaded on shared "
                        "cores; 0 = torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where frames are rendered (auto: the GPU when torch sees one)")
    p.add_argument("--json", default=None, help="write the full report here")
    p.set_defaults(func=run_scene)


def run_scene(args) -> int:
    import torch
    from tqdm import tqdm

    from ..errors import ConfigError
    from ..eval.scene import category_rows, evaluate, summary_rows

    if args.json:
        check_writable(args.json, "--json")
    if args.threads < 0:
        raise ConfigError("--threads", f"must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bar = None  # starts with the first stage: a bad input fails before it, on one line

    def progress(name):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=5, desc="eval scene", unit="stage")
        else:
            bar.update(1)
        bar.set_postfix_str(name)

    try:
        rep = evaluate(args.scene, args.queries, args.weights, progress, args.device)
        bar.update(bar.total - bar.n)
    finally:
        if bar is not None:
            bar.close()
    rows = summary_rows(rep)
    w = max(len(r[0]) for r in rows)
    print(f"scene {rep['scene']}  (torch threads: {rep['torch_threads']}, frames on {rep['render']['device']})")
    for name, val, target in rows:
        print(f"  {name:<{w}}  {val:<26} {target}")
    for name, cats in category_rows(rep):
        print(f"  {name}: {cats}")
    for qs in rep["queries"]["sets"]:
        for r in qs["rows"]:
            if not r["correct"]:
                got = r["answer"] if r["answer"] != "ambiguous" else f"ambiguous {r['candidates']}"
                want = r["expected"] if not r["expected_candidates"] else f"ambiguous {r['expected_candidates']}"
                print(f"  query miss ({qs['name']}): {r['query']!r} -> {got} (expected {want})")
    if args.json:
        write_json(args.json, rep, "--json")
        print(f"wrote {args.json}")
    return 0
