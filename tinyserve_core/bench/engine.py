"""`tinyserve bench engine`: our paged engine vs Hugging Face `generate()` on the same
weights and the same greedy prompts (outputs must match), on a static batch and on a
Poisson stream.

Both sides generate exactly `max_tokens` tokens per request (EOS ignored), so the
useful work is identical. HF's static batch is one left-padded `generate()` call
running to the longest request; on the Poisson stream HF serves requests one at a time
in arrival order (it has no continuous batching), we serve the same stream with ours.
Throughput = useful generated tokens / wall time of the whole workload."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn.attention import sdpa_kernel

from ..model.llama import SDPA_BACKENDS


@dataclass
class BenchRow:
    scenario: str
    system: str
    requests: int
    gen_tokens: int
    seconds: float
    tokens_per_s: float
    outputs_match: bool | None = None


def add_parser(sub):
    p = sub.add_parser("engine", help="our engine vs Hugging Face generate() (tokens/s)")
    p.add_argument("--model", default=None, help="HF checkpoint folder (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rate", type=float, default=8.0, help="Poisson arrivals per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both systems (default: torch's choice)")
    p.add_argument("--json", default=None, help="write the results here")
    p.set_defaults(func=run)
    return p


def _workload(tokenizer, n: int, length: int, max_tokens: int, seed: int, mixed: bool):
    """Real-text prompts from the shipped prompt corpus: exactly `length` tokens and
    `max_tokens` outputs each, or (mixed) lognormal lengths around them, as a real batch
    of requests has. Returns (prompts, max_tokens per request)."""
    from ..engine import workloads
    from ..engine.config import EngineConfig
    dist = "lognormal" if mixed else "fixed"
    cfg = EngineConfig.from_dict(dict(
        workload="static", requests=n, seed=seed,
        prompt_dist=dist, prompt_len=length if not mixed else max(1, length // 2),
        prompt_len_max=length * (4 if mixed else 1),
        output_dist=dist, output_len=max_tokens if not mixed else max(1, max_tokens // 2),
        output_len_max=max_tokens * (4 if mixed else 1)))
    reqs = workloads.from_engine_config(cfg, tokenizer)
    return [list(w.prompt_token_ids) for w in reqs], [int(w.max_tokens) for w in reqs]


def _hf_model(model_dir: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype)
    return m.to(device).eval()


def _hf_generate(model, prompts: list[list[int]], max_tokens: int, pad_id: int,
                 device: torch.device) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as HF wants for decoder-only batches
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    # The peer gets the same SDPA backends as the engine: with cuDNN, every decode step's
    # new KV length builds a new cuDNN graph on the host (see model.llama.SDPA_BACKENDS).
    with torch.inference_mode(), sdpa_kernel(SDPA_BACKENDS):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=pad_id)
    return [row[width:].tolist() for row in out.cpu()]


def run(args) -> int:
    from ..engine.config import EngineConfig
    from ..engine.engine import Engine, resolve_device, resolve_dtype
    from ..engine.sampling import SamplingParams
    from ..errors import ConfigError
    from ..model.loader import default_model_dir
    from .machine import describe

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", f"must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    model_dir = args.model or str(default_model_dir())
    rows: list[BenchRow] = []

    def ours(prompts, max_toks, stream):
        # a pool that holds the whole workload: this measures compute, not preemption
        need = sum(-(-(len(p) + m) // cfg.cache.block_size) for p, m in zip(prompts, max_toks))
        eng = Engine(cfg.replace(num_blocks=need + 8), model=engine.model, tokenizer=tok)
        order = {}
        pending = list(range(len(prompts)))
        outs: dict[int, list[int]] = {}
        t0 = time.perf_counter()
        while eng.has_unfinished() or pending:
            now = time.perf_counter() - t0
            while pending and (stream is None or stream[pending[0]] <= now):
                i = pending.pop(0)
                sp = SamplingParams(temperature=0.0, max_tokens=max_toks[i], ignore_eos=True)
                order[eng.add_request(prompts[i], sp)] = i
            if not eng.has_unfinished():
                time.sleep(max(0.0, stream[pending[0]] - now))
                continue
            for t in eng.step().finished:
                outs[order[t.request_id]] = list(t.output_token_ids)
        return time.perf_counter() - t0, [outs[i] for i in range(len(prompts))]

    def hf_run(prompts, max_toks, stream):
        t0 = time.perf_counter()
        if stream is None:  # one padded batch, run to the longest request
            outs = _hf_generate(hf, prompts, max(max_toks), pad, device)
            outs = [o[:m] for o, m in zip(outs, max_toks)]
        else:               # no continuous batching: serve in arrival order
            outs = []
            for i, p in enumerate(prompts):
                wait = stream[i] - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
                outs += _hf_generate(hf, [p], max_toks[i], pad, device)
        return time.perf_counter() - t0, outs

    cfg = EngineConfig.from_dict(dict(
        model=model_dir, device=device.type, block_size=16, num_blocks=8192,
        max_num_seqs=max(args.requests, 1), max_num_batched_tokens=1 << 16,
        enable_prefix_caching=False))
    engine = Engine(cfg)
    tok = engine.tokenizer
    hf = _hf_model(model_dir, device, dtype)
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    uniform = _workload(tok, args.requests, args.prompt_len, args.max_tokens, args.seed, False)
    mixed = _workload(tok, args.requests, args.prompt_len, args.max_tokens, args.seed, True)
    rng = np.random.default_rng(args.seed)
    arrivals = np.cumsum(rng.exponential(1.0 / args.rate, size=args.requests)).tolist()
    cases = [("static, uniform", uniform, None), ("static, mixed", mixed, None),
             (f"poisson {args.rate:g}/s, mixed", mixed, arrivals)]
    ours(uniform[0][:2], [4, 4], None)  # warm-up: first-call allocations and any kernel build
    hf_run(uniform[0][:2], [4, 4], None)
    for scenario, (prompts, max_toks), stream in cases:
        total = sum(max_toks)
        t_ours, out_ours = ours(prompts, max_toks, stream)
        t_hf, out_hf = hf_run(prompts, max_toks, stream)
        match = out_ours == out_hf
        rows.append(BenchRow(scenario, "tinyserve", len(prompts), total, t_ours, total / t_ours, match))
        rows.append(BenchRow(scenario, "hf generate", len(prompts), total, t_hf, total / t_hf, match))

    machine = describe(device)
    print(f"\nengine benchmark on {machine}; model {model_dir}; {args.requests} requests; "
          f"uniform = {args.prompt_len} prompt + {args.max_tokens} generated tokens each, mixed = "
          f"lognormal lengths up to 4x that; greedy, EOS ignored, {dtype}")
    print(f"{'scenario':<24} {'system':<12} {'seconds':>8} {'tok/s':>9} {'speed-up':>8} {'outputs':>8}")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        for r in (a, b):
            speed = f"{a.tokens_per_s / b.tokens_per_s:.2f}x" if r is a else ""
            print(f"{r.scenario:<24} {r.system:<12} {r.seconds:>8.2f} {r.tokens_per_s:>9.1f} "
                  f"{speed:>8} {'match' if r.outputs_match else 'DIFFER':>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "device": device.type, "dtype": str(dtype),
                       "model": model_dir, "rows": [asdict(r) for r in rows]}, f, indent=2)
        print(f"json -> {args.json}")
    return 0 if all(r.outputs_match for r in rows) else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="tinyserve bench engine")
    sub = ap.add_subparsers()
    add_parser(sub)
    sys.exit(run(ap.parse_args(["engine", *sys.argv[1:]])))
