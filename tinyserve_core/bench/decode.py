"""End-to-end decode step time (`tinyserve bench decode`) at long context, query-aware
selection (quest, and twostage at the same page count) vs dense, through the real
ModelRunner (projections, cache writes, scoring, selection, attention, MLP, LM head).
Every policy is timed with its decode step replayed from a CUDA graph (the runner's
default on a GPU); twostage is also timed eagerly (`twostage_eager_ms`, beside
`quest_eager_ms`), whose ratio shows what the graph saves. `twostage_vs_quest` compares
the two graph-replayed steps. `dense_fp8_ms`: the dense step over an FP8 (e4m3) cache
holding the same prefill, quantised page by page (`fp8_reference.quantize_cache`), with
its page bounds as codes; `quest_fp8_ms`: quest's step over it.

The shipped model's context is 2,048 tokens, so the long-context figure uses a Llama
of the usual serving shape (GQA 32/8, head_dim 128) with random weights and few layers:
step time depends on shapes, not on weight values, and the KV cache is filled by a real
prefill. Each configuration is timed after warm-up as the median of repeated decode
steps (CUDA events around the step on a GPU), and set beside its floor: the bytes it
must move at the copy bandwidth measured in the same run (bench/decode_floor.py)."""

from __future__ import annotations

import statistics

import torch

from ..errors import ConfigError
from .decode_floor import copy_bandwidth, profile_step, step_bytes, time_once


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
    # the first 3 are warm-up: kernel build, allocator, caches
    times = [time_once(lambda: runner.decode(items), cuda) for _ in range(reps + 3)]
    return statistics.median(times[3:])


def _time_fp8(runner, model, rows: list[dict], tables, ctx: int, reps: int, cuda: bool, bandwidth: float,
              budget: int) -> None:
    """The dense step and quest's step over an FP8 copy of `runner`'s prefilled cache (its
    pages' bounds as codes over the ctx + 1 tokens each sequence holds), beside their floors."""
    from ..engine.model_runner import DecodeItem, ModelRunner
    from ..kernels import fp8_reference
    from ..selection import build_selector
    from .kernels_fp8 import code_bounds

    kv = runner.kv
    fp8 = ModelRunner(model, kv.num_blocks, kv.block_size, device=runner.device, dtype=runner.dtype,
                      kv_cache_dtype=fp8_reference.FP8)
    fill = torch.zeros(kv.num_blocks, dtype=torch.long)
    for t in tables:   # positions 0..ctx written: full pages, then the last one's share
        full, last = divmod(ctx + 1, kv.block_size)
        fill[t[:full]] = kv.block_size
        fill[t[full]] = last
    for layer in range(kv.num_layers):   # one cache at a time: the float32 temporaries stay one layer's
        for j, (src, dst) in enumerate(((kv.k_caches, fp8.kv.k_caches), (kv.v_caches, fp8.kv.v_caches))):
            codes, scale = fp8_reference.quantize_cache(src[layer])
            dst[layer].copy_(codes)
            fp8.kv.kv_scales[layer][:, j] = scale
        fp8.kv.metas[layer].copy_(code_bounds(fp8.kv.k_caches[layer], fill))
    graphs = fp8.cuda_graphs
    for policy, selector in (("dense", None), ("quest", build_selector("quest", budget=budget, dense_layers=0))):
        fp8.selector = selector
        fp8.cuda_graphs = graphs   # a new selector: the steps are captured afresh
        for result in rows:
            items = [DecodeItem(i, 1, ctx, tables[i]) for i in range(result["batch"])]
            ms = result[f"{policy}_fp8_ms"] = _time_steps(fp8, items, reps, cuda) * 1000
            moved = step_bytes(fp8.model, fp8, ctx, result["batch"], policy, budget)
            floor_ms = moved["total"] / bandwidth * 1000
            result[f"{policy}_fp8"] = {"bytes": moved, "floor_ms": floor_ms, "vs_floor": ms / floor_ms}
    for result in rows:
        result["fp8_speedup"] = result["dense_ms"] / result["dense_fp8_ms"]
        result["quest_fp8_speedup"] = result["quest_ms"] / result["quest_fp8_ms"]


def _breakdown(runner, items, step_ms: float, device) -> dict:
    """One eager step of the runner's current policy, profiled per kernel category; the
    host gap is the (graph) step time minus the GPU busy time."""
    graphs, runner.cuda_graphs = runner.cuda_graphs, False
    try:
        out = profile_step(lambda: runner.decode(items), device)
    finally:
        runner.cuda_graphs = graphs
    out["host_gap"] = max(0.0, step_ms - out["gpu_busy"])
    return out


def measure_decode(device: str = "auto", contexts: list[int] | None = None, batches: list[int] | None = None,
                   budget: int = 2048, layers: int = 4, shape: str = "serving", block_size: int = 16,
                   reps: int = 20, progress=None, candidates: float = 4.0, quant_bits: int = 4,
                   breakdown: bool = False, bound_copy: bool = True, fp8: bool = True) -> dict:
    """Median decode step time, dense, quest and twostage (`candidates` x the budget, keys
    at `quant_bits`, stage 1 over the int8 bound copy or, `bound_copy` off, quest's bound),
    per (context, batch); dense and quest each beside its floor
    (bench/decode_floor.py); `breakdown`: also where an eager step's GPU time goes.
    `progress(row)` sees each row once measured. Returns the rows and what they were
    measured on."""
    from ..engine.engine import resolve_device
    from ..engine.model_runner import DecodeItem, ModelRunner, PrefillItem
    from ..selection import build_selector
    from .machine import describe

    device = resolve_device(device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    contexts = contexts or ([8192, 16384, 32768] if cuda else [1024, 2048])
    batches = batches or ([1, 16, 64] if cuda else [1, 4])
    for name, v in (("budget", budget), ("layers", layers), ("reps", reps),
                    ("batch", min(batches)), ("context", min(contexts))):
        if v < 1:
            raise ConfigError(name, f"must be >= 1, got {v}")
    bs = block_size
    model = _model(shape, layers, device)
    bandwidth = copy_bandwidth(device)
    vocab = model.config.vocab_size
    rows = []
    batches = sorted(set(batches))
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
        two = dict(budget=budget, dense_layers=0, candidates=candidates, quant_bits=quant_bits,
                   bound_copy=bound_copy)
        # Twostage last: from its first step on, its key copy is written with the cache,
        # which the other points must not pay (their graphs were captured without it).
        plans = [("dense", None, True), ("quest", build_selector("quest", budget=budget, dense_layers=0), True),
                 ("quest_eager", build_selector("quest", budget=budget, dense_layers=0), False),
                 ("twostage", build_selector("twostage", **two), True),
                 ("twostage_eager", build_selector("twostage", **two), False)]
        at = len(rows)
        rows.extend({"context": ctx, "batch": batch} for batch in batches)
        graphs = runner.cuda_graphs
        for policy, selector, with_graphs in plans:
            runner.selector = selector
            runner.cuda_graphs = graphs and with_graphs
            for result in rows[at:]:
                # every timed step writes position `ctx` again: the context stays ctx + 1 tokens
                items = [DecodeItem(i, 1, ctx, tables[i]) for i in range(result["batch"])]
                step_ms = result[f"{policy}_ms"] = _time_steps(runner, items, reps, cuda) * 1000
                if policy in ("dense", "quest"):   # the floor: the bytes the step must move
                    moved = step_bytes(runner.model, runner, ctx, result["batch"], policy, budget)
                    floor_ms = moved["total"] / bandwidth * 1000
                    result[policy] = {"bytes": moved, "floor_ms": floor_ms, "vs_floor": step_ms / floor_ms}
                    if breakdown:
                        result[policy]["breakdown"] = _breakdown(runner, items, step_ms, device)
        runner.cuda_graphs = graphs
        if fp8:
            _time_fp8(runner, model, rows[at:], tables, ctx, reps, cuda, bandwidth, budget)
        for result in rows[at:]:
            result["speedup"] = result["dense_ms"] / result["quest_ms"]
            result["twostage_vs_quest"] = result["twostage_ms"] / result["quest_ms"]
            if progress is not None:
                progress(result)
        del runner
        if cuda:
            torch.cuda.empty_cache()
    c = model.config
    return {"machine": describe(device), "torch": torch.__version__, "dtype": str(dtype), "layers": layers,
            "shape": shape, "block_size": bs, "budget": budget, "rows": rows,
            "copy_bandwidth_gbs": bandwidth / 1e9,
            "twostage": {"candidates": candidates, "quant_bits": quant_bits, "bound_copy": bound_copy},
            "model": {"heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads,
                      "head_dim": c.head_dim, "hidden": c.hidden_size}}
