"""`tinyserve bench decode`: end-to-end decode step time at long context, query-aware
selection (quest) vs dense, through the real ModelRunner (projections, cache writes,
scoring, selection, attention, MLP, LM head).

The shipped model's context is 2,048 tokens, so the long-context figure uses a Llama
of the usual serving shape (GQA 32/8, head_dim 128) with random weights and few layers:
step time depends on shapes, not on weight values, and the KV cache is filled by a real
prefill. Each configuration is timed after warm-up as the median of repeated decode
steps (CUDA events around the step on a GPU)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from ..errors import ConfigError


def add_parser(sub):
    p = sub.add_parser("decode", help="decode step time at long context: quest vs dense")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--context", type=int, nargs="+", default=None,
                   help="context lengths (default 8192 16384 32768 on a GPU, 1024 2048 on a CPU)")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch sizes (default 1 16 64 on a GPU, 1 4 on a CPU)")
    p.add_argument("--budget", type=int, default=2048, help="quest budget in tokens")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--shape", default="serving", choices=sorted(SHAPES))
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", default=None)
    p.set_defaults(func=run)
    return p


SHAPES = {  # name: (hidden, intermediate, q heads, kv heads, vocab)
    "serving": (4096, 11008, 32, 8, 32000),   # Llama-3-8B-like attention: GQA 32/8, head_dim 128
    "tiny": (256, 512, 4, 2, 1024),           # for a quick CPU check of the command itself
}


def _model(shape: str, layers: int, device):
    from ..model.config import ModelConfig
    from ..model.llama import LlamaForCausalLM
    hidden, inter, heads, kv_heads, vocab = SHAPES[shape]
    cfg = ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, max_position_embeddings=1 << 17,
                      rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it runs: a GPU fills 1 B weights in ms
        return LlamaForCausalLM(cfg)


def _time_steps(runner, items, reps: int, cuda: bool) -> float:
    times = []
    for i in range(reps + 3):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            runner.decode(items)
            b.record()
            torch.cuda.synchronize()
            dt = a.elapsed_time(b) / 1000
        else:
            t = time.perf_counter()
            runner.decode(items)
            dt = time.perf_counter() - t
        if i >= 3:  # warm-up: kernel build, allocator, caches
            times.append(dt)
    return statistics.median(times)


def run(args) -> int:
    from ..engine.engine import resolve_device
    from ..engine.model_runner import DecodeItem, ModelRunner, PrefillItem
    from ..selection import build_selector
    from .machine import describe

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    contexts = args.context or ([8192, 16384, 32768] if cuda else [1024, 2048])
    args.batch = args.batch or ([1, 16, 64] if cuda else [1, 4])
    for name, v in (("budget", args.budget), ("layers", args.layers), ("reps", args.reps),
                    ("batch", min(args.batch)), ("context", min(contexts))):
        if v < 1:
            raise ConfigError(name, f"must be >= 1, got {v}")
    bs = args.block_size
    model = _model(args.shape, args.layers, device)
    vocab = model.config.vocab_size
    rows = []
    batches = sorted(set(args.batch))
    for ctx in contexts:
        # One prefilled pool per context, shared by every batch size and policy: the
        # policies differ only at decode, and prefilling 64 x 32K tokens twice costs more
        # than all the timing.
        nseq = batches[-1]
        blocks_per_seq = -(-(ctx + 8) // bs)
        tables = [list(range(1 + i * blocks_per_seq, 1 + (i + 1) * blocks_per_seq)) for i in range(nseq)]
        runner = ModelRunner(model, nseq * blocks_per_seq + 1, bs, device=device, dtype=dtype)
        gen = torch.Generator().manual_seed(ctx)
        for i in range(nseq):  # one sequence per prefill keeps activation memory bounded
            prompt = torch.randint(0, vocab, (ctx,), generator=gen).tolist()
            runner.prefill([PrefillItem(i, prompt, 0, tables[i])])
        selectors = {"dense": None, "quest": build_selector("quest", budget=args.budget, dense_layers=0)}
        for batch in batches:
            # every timed step writes position `ctx` again: the context stays ctx + 1 tokens
            items = [DecodeItem(i, 1, ctx, tables[i]) for i in range(batch)]
            result = {"context": ctx, "batch": batch}
            for policy, selector in selectors.items():
                runner.selector = selector
                result[f"{policy}_ms"] = _time_steps(runner, items, args.reps, cuda) * 1000
            result["speedup"] = result["dense_ms"] / result["quest_ms"]
            rows.append(result)
            print(f"  ctx {ctx:>6} batch {batch:>3}: dense {result['dense_ms']:.2f} ms, "
                  f"quest {result['quest_ms']:.2f} ms", file=sys.stderr)
        del runner
        if cuda:
            torch.cuda.empty_cache()
    machine = describe(device)
    c = model.config
    print(f"\ndecode step, {args.layers}-layer Llama (GQA {c.num_attention_heads}/{c.num_key_value_heads}, "
          f"head_dim {c.head_dim}, hidden {c.hidden_size}), "
          f"{dtype}, block {bs}, quest budget {args.budget} tokens (all layers), on {machine}")
    print(f"{'context':>8} {'batch':>6} {'dense ms':>9} {'quest ms':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['context']:>8} {r['batch']:>6} {r['dense_ms']:>9.2f} {r['quest_ms']:>9.2f} "
              f"{r['speedup']:>8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "dtype": str(dtype), "layers": args.layers, "shape": args.shape,
                       "block_size": bs, "budget": args.budget, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="tinyserve bench")
    sub = ap.add_subparsers()
    add_parser(sub)
    sys.exit(run(ap.parse_args(["decode", *sys.argv[1:]])))
