"""The FP8 (e4m3) KV cache in the serving path (`kv_cache_dtype fp8`): the runner reads
exactly what the cache stores, the new tokens of a prefill attend at full precision, copy-
on-write carries the page scales and bounds, the pool counts the smaller blocks, the page
bounds (codes under the page scales) bound what the cache holds, quest selects over them,
the settings refuse the policies that read the keys themselves, and the engine's greedy
outputs follow the model's until its logits come close to a tie."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine
from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.errors import ConfigError
from tinyserve_core import kernels
from tinyserve_core.kernels import FP8, fp8_reference
from tinyserve_core.kv.kv_cache import KVCache, block_bytes, cache_dtype
from tinyserve_core.model.loader import load_model

BS, TOL = 4, 1e-5


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def model(tiny):
    return tiny[0]


def toks(n: int, seed: int) -> list[int]:
    return torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def dense_last(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_dense(torch.tensor([ids]))[0, -1]


def dequantised_into(fp32: ModelRunner, fp8: ModelRunner) -> None:
    """Overwrite fp32's K/V with what fp8's cache holds, read back through its scales."""
    for layer in range(len(fp8.kv.k_caches)):
        s = fp8.kv.kv_scales[layer]
        fp32.kv.k_caches[layer].copy_(fp8_reference.dequantize_cache(fp8.kv.k_caches[layer], s, 0))
        fp32.kv.v_caches[layer].copy_(fp8_reference.dequantize_cache(fp8.kv.v_caches[layer], s, 1))


def test_the_cache_is_fp8_with_scales_and_code_bounds(model):
    r = ModelRunner(model, 16, BS, kv_cache_dtype=FP8)
    hkv, d = model.config.num_key_value_heads, model.config.head_dim
    assert r.kv.k_caches[0].dtype == FP8 and r.kv.v_caches[1].dtype == FP8
    assert r.kv.metas[0].dtype == FP8 and r.kv.metas[1].shape == (16, 2, hkv, d)
    assert r.kv.kv_scales[0].shape == (16, 2, hkv)
    with pytest.raises(ConfigError, match="kv_cache_dtype"):
        r.kv.ensure_quant_keys(8)


def test_decode_reads_exactly_what_the_fp8_cache_holds(model, monkeypatch):
    """Oracle: an fp32 runner whose cache write is replaced by a copy of the FP8 cache's
    content after the FP8 step (every layer), so it attends over exactly those values."""
    seqs = [toks(7, 11), toks(13, 12), toks(2, 13)]
    tables = [[3, 8], [0, 1, 2, 9], [4]]
    r8, r32 = ModelRunner(model, 16, BS, kv_cache_dtype=FP8), ModelRunner(model, 16, BS)
    for r in (r8, r32):
        r.prefill([PrefillItem(i, s[:-1], 0, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    items = [DecodeItem(i, s[-1], len(s) - 1, t) for i, (s, t) in enumerate(zip(seqs, tables))]
    got = r8.decode(items).logits   # the step's own token is read back quantised too

    def held_by_fp8(key, value, k_cache, v_cache, *args, **kw):
        layer = next(i for i, c in enumerate(r32.kv.k_caches) if c is k_cache)
        s = r8.kv.kv_scales[layer]
        k_cache.copy_(fp8_reference.dequantize_cache(r8.kv.k_caches[layer], s, 0))
        v_cache.copy_(fp8_reference.dequantize_cache(r8.kv.v_caches[layer], s, 1))

    monkeypatch.setattr(kernels, "reshape_and_cache", held_by_fp8)
    want = r32.decode(items).logits
    assert torch.allclose(got, want, atol=TOL)
    for i, s in enumerate(seqs):   # quantisation moved the logits, but not far
        dense = dense_last(model, s)
        assert 0 < (got[i] - dense).abs().max() < 0.1 * dense.abs().max()


def test_a_prefix_hit_reads_the_cached_prefix_quantised_and_new_tokens_exactly(model):
    s = toks(14, 21)
    table = [5, 2, 7, 1]
    r8, r32 = ModelRunner(model, 16, BS, kv_cache_dtype=FP8), ModelRunner(model, 16, BS)
    r8.prefill([PrefillItem(0, s[:8], 0, table)])     # two full pages, then a hit on both
    r32.prefill([PrefillItem(0, s[:8], 0, table)])
    dequantised_into(r32, r8)
    got = r8.prefill([PrefillItem(0, s, 8, table)]).logits
    want = r32.prefill([PrefillItem(0, s, 8, table)]).logits
    assert torch.allclose(got, want, atol=TOL)
    # the pages the hit wrote hold the new tokens quantised (page 7 from offset 0, page 1 partly)
    k = fp8_reference.dequantize_cache(r8.kv.k_caches[0], r8.kv.kv_scales[0], 0)
    assert torch.count_nonzero(k[7]) > 0 and torch.count_nonzero(k[1, 2:]) == 0


def test_copy_on_write_copies_codes_and_scales(model):
    r = ModelRunner(model, 16, BS, kv_cache_dtype=FP8)
    r.prefill([PrefillItem(0, toks(6, 8), 0, [2, 5])])
    r.copy_blocks([(5, 9)])
    for layer in range(2):
        assert torch.equal(r.kv.k_caches[layer][9].view(torch.uint8), r.kv.k_caches[layer][5].view(torch.uint8))
        assert torch.equal(r.kv.kv_scales[layer][9], r.kv.kv_scales[layer][5])
        assert torch.equal(r.kv.metas[layer][9].view(torch.uint8), r.kv.metas[layer][5].view(torch.uint8))
        assert bool((r.kv.kv_scales[layer][9] > 0).all())


def test_fp8_blocks_cost_half_plus_their_scales():
    """Codes and code bounds at a byte, plus a float32 K and V scale per kv-head."""
    layers, bs, hkv, d = 4, 16, 8, 128
    fp16 = block_bytes(layers, bs, hkv, d, torch.float16)
    fp8 = block_bytes(layers, bs, hkv, d, FP8)
    assert fp16 == layers * (2 * bs * hkv * d * 2 + 2 * hkv * d * 2)
    assert fp8 == layers * (2 * bs * hkv * d + 2 * hkv * d + 2 * hkv * 4)
    assert KVCache(layers, 8, bs, hkv, d, FP8).bytes_per_block == fp8
    assert cache_dtype("auto", torch.bfloat16) == torch.bfloat16
    assert cache_dtype("fp8", torch.float16) == cache_dtype("fp8_e4m3", torch.float32) == FP8


# ---- settings ---------------------------------------------------------------------------
def test_settings_refuse_only_the_policy_that_reads_a_key_copy_over_an_fp8_cache():
    cfg = EngineConfig.from_dict({"kv_cache_dtype": "fp8"})
    assert cfg.cache.kv_cache_dtype == "fp8" and cfg.get("kv_cache_dtype") == "fp8"
    # page bounds (quest, adaptive, streaming) or the keys dequantised (h2o, oracle, oracle_p)
    for ok in ("quest", "adaptive", "streaming", "h2o", "oracle", "oracle_p"):
        assert cfg.replace(policy=ok, stats=True).selection.policy == ok
    with pytest.raises(ConfigError) as e:
        EngineConfig.from_dict({"kv_cache_dtype": "fp8", "policy": "twostage"})
    assert e.value.field == "kv_cache_dtype" and "quest" in e.value.message and "h2o" in e.value.message
    with pytest.raises(ConfigError) as e:   # the key just edited is the one blamed
        cfg.replace(policy="twostage")
    assert e.value.field == "policy" and "fp8" in e.value.message and "twostage" in e.value.message
    with pytest.raises(ConfigError) as e:
        EngineConfig.from_dict({"kv_cache_dtype": "int8"})
    assert e.value.field == "kv_cache_dtype"


# ---- page bounds and selection ----------------------------------------------------------
def test_page_bounds_bound_what_the_cache_holds(model):
    """After prefills (a page filled over two calls) and decode steps, every page's code
    bounds times its K scale are the min/max of the page's dequantised keys, exactly."""
    seqs = [toks(11, 41), toks(6, 42)]
    tables = [[3, 8, 1, 5], [0, 2, 7]]
    r = ModelRunner(model, 16, BS, kv_cache_dtype=FP8)
    r.prefill([PrefillItem(i, s[:-3], 0, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    for step in range(3):
        r.decode([DecodeItem(i, s[-3 + step], len(s) - 3 + step, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    for layer in range(len(r.kv.k_caches)):
        k = fp8_reference.dequantize_cache(r.kv.k_caches[layer], r.kv.kv_scales[layer], 0)
        bounds = fp8_reference.dequantize(r.kv.metas[layer], r.kv.kv_scales[layer][:, 0, None, :, None])
        for s, t in zip(seqs, tables):
            for p, blk in enumerate(t[:(len(s) + BS - 1) // BS]):
                n = min(BS, len(s) - p * BS)
                assert torch.equal(bounds[blk, 0], k[blk, :n].amin(0)), (layer, blk)
                assert torch.equal(bounds[blk, 1], k[blk, :n].amax(0)), (layer, blk)


def test_engine_runs_quest_over_an_fp8_cache_with_statistics(tiny):
    """quest over the FP8 cache's bounds, with statistics (which read the pages dequantised):
    the bound never falls below a cached key's logit (no violations), sparse layers attend
    fewer pages than the context, the first token (from the full-precision prefill) is the
    model's, and the attention mass the selections keep is what quest keeps over a float32
    cache of the same run, within a few points."""
    model, tok = tiny
    prompt = toks(60, 51)
    recall = {}
    for dtype in ("fp8", "auto"):
        eng = Engine(EngineConfig.from_dict({"device": "cpu", "block_size": BS, "num_blocks": 128,
                                             "kv_cache_dtype": dtype, "policy": "quest", "budget": "16",
                                             "dense_layers": 0, "stats": True}), model=model, tokenizer=tok)
        eng.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
        out = []
        while eng.has_unfinished():
            for t in eng.step().finished:
                out = list(t.output_token_ids)
        assert len(out) == 8 and (eng.runner.kv.metas[0].dtype == FP8) == (dtype == "fp8")
        hist = list(eng.selector.stats.history)
        assert len(hist) == 7 and all(sum(h.bound_violations) == 0 for h in hist)
        assert all(max(h.pages_selected) < max(h.context_pages) for h in hist)
        with torch.inference_mode():
            assert out[0] == int(model.forward_dense(torch.tensor([prompt]))[0, -1].argmax())
        recall[dtype] = sum(sum(h.mass_recall) / len(h.mass_recall) for h in hist[:3]) / 3
    assert 0.2 < recall["fp8"] < 1 and abs(recall["fp8"] - recall["auto"]) < 0.05, recall


def test_engine_runs_true_attention_policies_over_an_fp8_cache(tiny):
    """h2o and the oracle rank pages by the true attention over the dequantised keys: both
    keep fewer pages than the context, and the oracle keeps far more of the attention mass
    than quest's bounds do at the same budget (a ranking of the codes alone would not)."""
    model, tok = tiny
    recall = {}
    for policy in ("h2o", "oracle", "quest"):
        eng = Engine(EngineConfig.from_dict({"device": "cpu", "block_size": BS, "num_blocks": 128,
                                             "kv_cache_dtype": "fp8", "policy": policy, "budget": "16",
                                             "dense_layers": 0, "stats": True}), model=model, tokenizer=tok)
        eng.add_request(toks(60, 52), SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
        while eng.has_unfinished():
            eng.step()
        hist = list(eng.selector.stats.history)
        assert len(hist) == 5 and all(max(h.pages_selected) < max(h.context_pages) for h in hist), policy
        recall[policy] = sum(sum(h.mass_recall) / len(h.mass_recall) for h in hist) / len(hist)
    assert recall["oracle"] > recall["quest"] + 0.2, recall


# ---- the engine -------------------------------------------------------------------------
def test_engine_runs_prefix_hits_and_forks_over_an_fp8_cache(tiny):
    """Greedy tokens stay among the model's top 3 at every step (teacher-forced on the
    engine's own history; a cache read from the wrong page or with a wrong scale picks
    tokens at random out of 320), and a prompt without a prefix hit gets exactly the
    model's first token (its prefill attends at full precision)."""
    model, tok = tiny
    shared = list(range(40, 57))   # 17 tokens: 4 full pages, shared by the first two prompts
    prompts = [shared + [1, 2, 3], shared + [9, 8], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]]
    steps = 12
    eng = Engine(EngineConfig.from_dict({"device": "cpu", "block_size": 4, "num_blocks": 256,
                                         "kv_cache_dtype": "fp8"}), model=model, tokenizer=tok)
    assert eng.runner.kv.k_caches[0].dtype == FP8
    greedy = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True)
    forked = SamplingParams(temperature=1.0, seed=3, n=2, max_tokens=steps, ignore_eos=True)
    outs, hit, cows = {}, [], 0
    for p, params in zip(prompts, (greedy, greedy, forked)):   # one at a time: the second hits the first
        rid = eng.add_request(p, params)
        while eng.has_unfinished():
            rec = eng.step()
            eng.block_manager.check_invariants()
            hit += [e.num_tokens for e in rec.events if e.kind == "prefix_hit"]
            cows += sum(e.kind == "cow_copy" for e in rec.events)
            for t in rec.finished:
                outs.setdefault(t.request_id, []).append(list(t.output_token_ids))
        assert [len(o) for o in outs[rid]] == [steps] * params.n
        if params.temperature:
            continue
        with torch.inference_mode():
            logits = model.forward_dense(torch.tensor([p + outs[rid][0]]))[0, len(p) - 1:-1]
        top3 = logits.topk(3, dim=-1).indices
        assert all(t in top3[i] for i, t in enumerate(outs[rid][0])), (p, outs[rid][0], top3)
        if not hit:
            assert outs[rid][0][0] == int(logits[0].argmax())
    assert hit == [16] and cows == 1   # the fork's shared half-full page was copied, scales with it


# ---- on a GPU: the CUDA kernels against the reference ops -------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_kernels_write_the_same_fp8_cache_and_attend_alike(monkeypatch):
    """head_dim 64 (a shape the FP8 kernels serve), fp16, every op on its CUDA kernel or on
    its reference: the caches they leave (prefill runs, decode one token a page, a prefix
    hit) and the logits of every step agree to fp16 rounding (the products and norms differ
    in their low bits, so a value may round to the next e4m3 code; the write kernels alone
    are bit-exact in tests/kernels/test_fp8_cuda.py)."""
    from tinyserve_core.model import LlamaForCausalLM, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    seqs = [toks(40, 31), toks(77, 32), toks(13, 33)]
    tables = [[3, 8, 11], [0, 1, 2, 9, 12], [4]]
    got = {}
    for backend in ("cuda", "reference"):
        monkeypatch.setenv("TINYSERVE_KERNELS", backend)
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        r = ModelRunner(model, 16, 16, device="cuda", dtype=torch.float16, kv_cache_dtype=FP8,
                        cuda_graphs=False)
        logits = [r.prefill([PrefillItem(i, [t % 97 for t in s[:-8]], 0, t)
                             for i, (s, t) in enumerate(zip(seqs, tables))]).logits]
        for step in range(4):
            items = [DecodeItem(i, s[-8 + step] % 97, len(s) - 8 + step, t)
                     for i, (s, t) in enumerate(zip(seqs, tables))]
            logits.append(r.decode(items).logits)
        ids = [t % 97 for t in seqs[1]]   # a prefix hit on sequence 1's first two pages
        logits.append(r.prefill([PrefillItem(0, ids, 32, tables[1])]).logits)
        got[backend] = (logits, [fp8_reference.dequantize_cache(c, s, j)
                                 for caches, j in ((r.kv.k_caches, 0), (r.kv.v_caches, 1))
                                 for c, s in zip(caches, r.kv.kv_scales)])
    (lc, cc), (lr, cr) = got["cuda"], got["reference"]
    for a, b in zip(cc, cr):
        assert torch.count_nonzero(b) > 0 and (a - b).norm() <= 2e-2 * b.norm()
    for a, b in zip(lc, lr):
        assert (a - b).abs().max() <= 2e-2 * b.abs().max()
