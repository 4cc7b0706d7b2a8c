"""The engine end to end on the GPU with the CUDA kernels, against the CPU reference
path, on the shipped model (`pytest -m cuda`; skipped without a GPU).

fp16 on the GPU and fp32 on the CPU round differently, so a token whose top-2 logits are
nearly tied may flip and the continuation diverges from there; the check is therefore
exact agreement up to the first near-tie, plus exact agreement of the GPU kernels with
the GPU reference ops at the same dtype."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.model.loader import default_model_dir, load_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

PROMPTS = ["The list type", "A dictionary maps", "The pass key is 48213. Remember it.",
           "def read_file(path):", "Exceptions are raised when", "The socket module provides"]
STEPS = 32


def greedy(device: str, dtype: str, policy: str = "dense", monkeypatch=None, kernels=None,
           budget: float = 64, kv_cache_dtype: str = "auto", **settings):
    if kernels is not None:
        monkeypatch.setenv("TINYSERVE_KERNELS", kernels)
    cfg = EngineConfig.from_dict({**dict(device=device, dtype=dtype, num_blocks=512, block_size=16,
                                         policy=policy, budget=budget, enable_prefix_caching=False,
                                         kv_cache_dtype=kv_cache_dtype), **settings})
    eng = Engine(cfg)
    ids = [eng.add_request(p, SamplingParams(temperature=0.0, max_tokens=STEPS, ignore_eos=True))
           for p in PROMPTS]
    outs = {}
    while eng.has_unfinished():
        for t in eng.step().finished:
            outs[t.request_id] = list(t.output_token_ids)
    return [outs[i] for i in ids], eng


def margins(prompt_ids: list[int], tokens: list[int]) -> list[float]:
    """fp64 CPU top-1 minus top-2 logit at each generated position."""
    model, _ = load_model(str(default_model_dir()), device="cpu", dtype=torch.float64)
    with torch.inference_mode():
        logits = model.forward_dense(torch.tensor([prompt_ids + tokens]))[0, len(prompt_ids) - 1:-1]
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


def test_gpu_kernels_match_gpu_reference_ops(monkeypatch):
    cuda_out, eng = greedy("cuda", "float16", monkeypatch=monkeypatch, kernels="cuda")
    ref_out, _ = greedy("cuda", "float16", monkeypatch=monkeypatch, kernels="reference")
    assert cuda_out == ref_out


def test_gpu_engine_matches_cpu_reference_until_a_near_tie(monkeypatch):
    gpu_out, eng = greedy("cuda", "float16", monkeypatch=monkeypatch, kernels="cuda")
    cpu_out, _ = greedy("cpu", "float32", monkeypatch=monkeypatch, kernels="reference")
    tok = eng.tokenizer
    for prompt, g, c in zip(PROMPTS, gpu_out, cpu_out):
        m = margins(tok.encode(prompt), c)
        for i, (a, b) in enumerate(zip(g, c)):
            if a != b:
                # only a near-tie may flip; after it the continuations legitimately differ
                assert m[i] < 0.05, f"{prompt!r}: token {i} differs with a clear margin {m[i]:.3f}"
                break


def test_fp8_cache_on_gpu_follows_the_model_until_a_near_tie(monkeypatch):
    """The FP8 cache through the CUDA kernels and the decode CUDA graphs: greedy tokens equal
    the fp32 CPU engine's until the model's top two logits come within FP8_TIE (e4m3
    rounds K and V to 3 mantissa bits, which moves logits more than fp16 rounding does)."""
    gpu_out, eng = greedy("cuda", "float16", monkeypatch=monkeypatch, kernels="cuda", kv_cache_dtype="fp8")
    assert eng.runner.kv.k_caches[0].dtype == torch.float8_e4m3fn and eng.runner.cuda_graphs
    cpu_out, _ = greedy("cpu", "float32", monkeypatch=monkeypatch, kernels="reference")
    tok, same = eng.tokenizer, 0
    for prompt, g, c in zip(PROMPTS, gpu_out, cpu_out):
        m = margins(tok.encode(prompt), c)
        for i, (a, b) in enumerate(zip(g, c)):
            if a != b:
                assert m[i] < FP8_TIE, f"{prompt!r}: token {i} differs with a clear margin {m[i]:.3f}"
                break
            same += 1
    assert same >= len(PROMPTS) * STEPS // 4   # most prompts agree for many steps


FP8_TIE = 0.5


def test_quest_on_gpu_runs_the_sparse_kernels(monkeypatch):
    # a 16-token budget is smaller than every context here, so sparse layers really select
    out, eng = greedy("cuda", "float16", policy="quest", monkeypatch=monkeypatch, kernels="cuda",
                      budget=16)
    assert all(len(o) == STEPS for o in out)
    assert eng.runner.kv.k_caches[0].is_cuda


def test_quest_over_an_fp8_cache_on_gpu_follows_the_reference_ops(monkeypatch):
    """quest over the FP8 cache's code bounds with the CUDA kernels (the FP8 scorer, select,
    the FP8 decode kernel over the pages) inside the decode CUDA graphs, against the same
    engine on the GPU reference ops: the first token of every prompt is the same, and the
    continuations agree until the two paths pick a different page or round a near tie apart
    (the scorer's bound sits a margin above the reference's fp32 bound), so most of them
    for many steps."""
    cuda_out, eng = greedy("cuda", "float16", policy="quest", monkeypatch=monkeypatch, kernels="cuda",
                           budget=16, kv_cache_dtype="fp8")
    assert eng.runner.kv.metas[0].dtype == torch.float8_e4m3fn and eng.runner.cuda_graphs
    ref_out, _ = greedy("cuda", "float16", policy="quest", monkeypatch=monkeypatch, kernels="reference",
                        budget=16, kv_cache_dtype="fp8")
    assert all(len(o) == STEPS for o in cuda_out)
    same = []
    for a, b in zip(cuda_out, ref_out):
        assert a[0] == b[0]
        same.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), STEPS))
    assert sum(same) >= len(PROMPTS) * STEPS // 4, same


def test_selection_statistics_over_an_fp8_cache_on_gpu(monkeypatch):
    """quest with statistics over the FP8 cache in the decode CUDA graphs (the statistics
    kernels read the codes), and h2o and the oracle over it (true attention over the
    dequantised keys, eager): quest's code bounds are never beaten by a cached key (no
    violations), every policy keeps fewer pages than the context once it outgrows the
    budget, and the oracle keeps more of the attention mass than quest at the same budget
    (pages of 4 tokens: a 16-token budget leaves two pages to choose besides the sink and
    the page being written)."""
    recall = {}
    for policy in ("quest", "oracle", "h2o"):
        out, eng = greedy("cuda", "float16", policy=policy, monkeypatch=monkeypatch, kernels="cuda", budget=16,
                          kv_cache_dtype="fp8", stats=True, dense_layers=0, block_size=4, num_blocks=2048)
        assert all(len(o) == STEPS for o in out)
        hist = list(eng.selector.stats.history)
        assert len(hist) >= STEPS - 1, policy
        # the last step: every context is longer than the 16-token budget's pages
        assert max(hist[-1].pages_selected) < max(hist[-1].context_pages), policy
        recall[policy] = sum(sum(h.mass_recall) / len(h.mass_recall) for h in hist) / len(hist)
        if policy == "quest":
            assert eng.runner.cuda_graphs and all(sum(h.bound_violations) == 0 for h in hist)
    assert recall["oracle"] > recall["quest"], recall
