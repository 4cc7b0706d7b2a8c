"""The two-stage selector, its quantised key copy, and the oracle top-p measuring stick."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.errors import ConfigError
from tinyserve_core.kernels import bound_copy_reference as bc
from tinyserve_core.kernels import quant_reference as qr
from tinyserve_core.kv.kv_cache import KVCache
from tinyserve_core.selection import PageSelector, make_policy
from tinyserve_core.selection.base import SelectContext
from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass

SCALE = 0.25
LAYER = type("Attn", (), {"scale": SCALE})()


def _all_qkeys(kv, bits, layer=0):
    """A quantised copy of every page of a test cache, as KVCache.ensure_quant_keys builds it."""
    k, m = kv.k_caches[layer], kv.metas[layer]
    nb, bs, h, d = k.shape
    q = torch.zeros(nb, bs, h, d * bits // 8, dtype=torch.uint8)
    qr.quantize_keys(k, m, q, torch.arange(nb) * bs + bs - 1)
    return q


def _all_qbounds(kv, layer=0):
    m = kv.metas[layer]
    rows = torch.zeros(m.shape[0], m.shape[2], bc.row_bytes(m.shape[3]), dtype=torch.uint8)
    bc.write_bound_copy(m, rows, torch.arange(m.shape[0]))
    return rows


def _ctx(kv, tables, lens, q, bits=8):
    return SelectContext(query=q, k_cache=kv.k_caches[0], v_cache=kv.v_caches[0], meta=kv.metas[0],
                         block_tables=tables, seq_lens=lens, seq_ids=list(range(len(lens))), layer_idx=0,
                         scale=SCALE, block_size=kv.block_size, qkeys=_all_qkeys(kv, bits),
                         qbounds=_all_qbounds(kv))


def _sets(page_indices):
    return [[set(r[r >= 0].tolist()) for r in row] for row in page_indices]


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_keys_are_within_half_a_step_of_the_keys(bits):
    """One step per (page, kv-head): the widest channel's range over L, for every channel."""
    g = torch.Generator().manual_seed(bits)
    keys = torch.randn(5, 16, 3, 32, generator=g) * 2 + 0.5
    keys[..., 7] *= 0.25                                   # a narrow channel shares the wide step
    lo, hi = keys.amin(1, keepdim=True), keys.amax(1, keepdim=True)
    codes = qr.quantize(keys, lo, hi, bits)
    assert codes.dtype == torch.uint8 and codes.shape[-1] == 32 * bits // 8
    back = qr.dequantize(codes, lo, hi, bits)
    L = 2 ** bits - 1
    r = (hi - lo).amax(-1, keepdim=True)
    assert ((back - keys).abs() <= r / L / 2 + 1e-5).all()
    assert torch.equal(back.amin(1, keepdim=True), lo)
    widest = (hi - lo).argmax(-1, keepdim=True)            # reaches code L, so its max comes back
    assert torch.allclose(back.amax(1, keepdim=True).gather(-1, widest), hi.gather(-1, widest), atol=1e-5)
    if bits == 4:
        codes = torch.stack((codes & 15, codes >> 4), -1).flatten(-2)
    narrow = (hi - lo)[..., 7] / r[..., 0] * L             # levels the narrow channel spans
    assert (codes[..., 7].amax(1).float() <= narrow[:, 0].ceil() + 0.5).all()
    assert (codes[..., 7].amax(1).float() < L).all()


def test_cache_writes_keep_the_copy_equal_to_a_fresh_quantisation():
    """Token-by-token decode writes widen a page's min/max; the copy must track it (the
    whole page is re-quantised), and must equal quantising the final cache from scratch."""
    torch.manual_seed(0)
    kv = KVCache(1, 12, 8, 2, 16)
    qk = kv.ensure_quant_keys(8)[0]
    slots = torch.tensor([3 * 8 + i for i in range(8)] + [7 * 8 + i for i in range(5)])
    kernels.reshape_and_cache(torch.randn(6, 2, 16), torch.randn(6, 2, 16), kv.k_caches[0], kv.v_caches[0],
                              kv.metas[0], slots[:6], qk)  # a prefill
    for s in slots[6:]:  # then decode steps, one token each
        kernels.reshape_and_cache(torch.randn(1, 2, 16) * 3, torch.randn(1, 2, 16), kv.k_caches[0],
                                  kv.v_caches[0], kv.metas[0], s[None], qk)
    fresh = torch.zeros_like(qk)
    qr.quantize_keys(kv.k_caches[0], kv.metas[0], fresh, torch.tensor([3 * 8 + 7, 7 * 8 + 4]))
    assert torch.equal(qk[3], fresh[3]) and torch.equal(qk[7, :5], fresh[7, :5])
    assert int(qk[3].max()) == 255 and int(qk[3].min()) == 0   # the page's range spans the codes


def test_page_estimates_match_the_true_page_logsumexp(make_kv):
    kv, tables, lens = make_kv([100, 37], num_kv_heads=2, block_size=16)
    q = torch.randn(2, 4, 16)
    cand = torch.tensor([[[0, 3, 6, -1], [6, 2, -1, -1]], [[0, 1, 2, -1], [2, -1, -1, -1]]], dtype=torch.int32)
    got = qr.page_estimates(q, _all_qkeys(kv, 8), kv.metas[0], tables, lens, cand, SCALE)
    assert got.shape == (2, 4, 4)
    for b, L in enumerate(lens.tolist()):
        logits = attention_logits(q[b], context_keys(kv.k_caches[0], tables[b], L), SCALE)   # [Hq, L]
        for hq in range(4):
            for c, pg in enumerate(cand[b, hq // 2].tolist()):
                if pg < 0:
                    assert got[b, hq, c] == float("-inf")
                    continue
                want = torch.logsumexp(logits[hq, pg * 16:min(L, pg * 16 + 16)], 0)
                assert abs(float(got[b, hq, c]) - float(want)) < 0.05   # int8: a small fraction of a nat


def test_one_candidate_per_budget_page_keeps_quests_pages(make_kv):
    """candidates = 1 on quest's own bound: stage 1 already holds exactly the budget, stage 2
    only reorders it."""
    kv, tables, lens = make_kv([300, 170, 45], num_kv_heads=2, block_size=8, seed=3)
    q = torch.randn(3, 4, 16) * 2
    quest = make_policy("quest", budget=48, dense_layers=0, sink_pages=1).select(_ctx(kv, tables, lens, q))
    two = make_policy("twostage", budget=48, candidates=1, dense_layers=0, sink_pages=1, bound_copy="off").select(
        _ctx(kv, tables, lens, q))
    assert _sets(two.page_indices) == _sets(quest.page_indices)
    assert two.candidates is not None and _sets(two.candidates) == _sets(quest.page_indices)


def test_stage_one_ranks_by_the_bound_copy_which_never_undercuts_quests_bound(make_kv):
    kv, tables, lens = make_kv([300, 170, 45], num_kv_heads=2, block_size=8, seed=4)
    q = torch.randn(3, 4, 16) * 2
    ctx = _ctx(kv, tables, lens, q)
    two = make_policy("twostage", budget=48, candidates=2, dense_layers=0).select(ctx)
    exact = kernels.page_scores(q, kv.metas[0], tables, lens, SCALE, kv.block_size)
    assert torch.equal(two.scores, kernels.page_scores_copy(q, ctx.qbounds, tables, lens, SCALE, kv.block_size))
    live = torch.isfinite(exact)
    assert torch.equal(live, torch.isfinite(two.scores))
    assert (two.scores[live] >= exact[live] - 1e-5 * exact[live].abs()).all()
    with pytest.raises(ValueError, match="bound copy"):
        make_policy("twostage", budget=48, dense_layers=0).select(dataclasses.replace(ctx, qbounds=None))


def _needle(L, H, D, g, page=20, block=16):
    k = torch.randn(L, H, D, generator=g) * 0.3
    k[page * block + 3] = 2.0   # one key aligned with an all-ones query: the true needle
    # decoys: key j of the page is high on channel j alone, so every channel's max is high
    # (a bound of 16 x 2.5) while every key points away from the query
    for p in range(30, 38):
        k[p * block:(p + 1) * block] = -1.0
        for j in range(block):
            k[p * block + j, :, j] = 2.5
    return k


def test_stage_two_finds_the_needle_the_bound_ranks_below_decoys(make_kv):
    kv, tables, lens = make_kv([640], num_kv_heads=1, block_size=16,
                               key_fn=lambda layer, b, L, H, D, g: _needle(L, H, D, g))
    q = torch.ones(1, 2, 16)
    ctx = _ctx(kv, tables, lens, q)
    quest = make_policy("quest", budget=64, dense_layers=0).select(ctx)   # 4 pages
    two = make_policy("twostage", budget=64, candidates=4, dense_layers=0).select(ctx)
    assert 20 not in _sets(quest.page_indices)[0][0]          # the decoys win on the bound
    assert 20 in _sets(two.candidates)[0][0]                  # but the needle is a candidate
    assert 20 in _sets(two.page_indices)[0][0] and (two.page_indices >= 0).sum() == 4


@pytest.mark.parametrize("bits", [8, 4])
def test_adaptive_form_keeps_the_fewest_pages_reaching_the_estimated_mass(make_kv, bits):
    kv, tables, lens = make_kv([640], num_kv_heads=1, block_size=16,
                               key_fn=lambda layer, b, L, H, D, g: _needle(L, H, D, g))
    q = torch.ones(1, 2, 16) * 3
    pol = make_policy("twostage", budget=1 / 8, estimate_top_p=0.9, quant_bits=bits, dense_layers=0)
    sel = pol.select(_ctx(kv, tables, lens, q, bits))
    kept = _sets(sel.page_indices)[0][0]
    assert 20 in kept and 39 in kept                   # the needle, and the page being written
    assert len(kept) < 5 <= math.ceil(40 / 8)          # fewer than the budget's 5
    assert int(sel.budget_pages[0, 0]) == len(kept)


def test_twostage_parameters_are_checked():
    with pytest.raises(ConfigError, match="quant_bits"):
        make_policy("twostage", quant_bits=6)
    with pytest.raises(ConfigError, match="candidates"):
        make_policy("twostage", candidates=0.5)
    with pytest.raises(ConfigError, match="bound_copy"):
        make_policy("twostage", bound_copy="maybe")
    assert make_policy("twostage", bound_copy="off").params.bound_copy is False
    assert make_policy("twostage", estimate_top_p=0).params.estimate_top_p == 0.0


def test_selector_keeps_the_copy_current_across_policy_switches(make_kv):
    torch.manual_seed(1)
    kv = KVCache(2, 40, 8, 2, 16)
    L = 200
    slots = torch.arange(L)
    for i in range(2):
        kernels.reshape_and_cache(torch.randn(L, 2, 16), torch.randn(L, 2, 16), kv.k_caches[i], kv.v_caches[i],
                                  kv.metas[i], slots)
    tables = torch.arange(25, dtype=torch.int32)[None]
    lens = torch.tensor([L], dtype=torch.int32)
    sel = PageSelector("twostage", budget=32, dense_layers=0, quant_bits=4, stats=True)
    pi = sel.select(LAYER, torch.randn(1, 4, 16), kv, 1, tables, lens, [0])
    assert kv.qkey_bits == 4 and kv.qkeys[1].shape == (40, 8, 2, 8) and pi.shape[-1] == 4
    sel.end_step([0])   # statistics (and their records) arrive when the step is collected
    (summary,) = sel.collect()
    d = summary.detail
    assert d.candidates is not None and d.num_records == 2
    assert not (d.selected & ~d.candidates).any() and (d.candidates.sum(-1) == 16).all()
    kv.copy_blocks([(3, 39)])
    assert torch.equal(kv.qkeys[0][39], kv.qkeys[0][3]) and torch.equal(kv.qbounds[1][39], kv.qbounds[1][3])
    # under quest the copy stays (a captured graph may write it) and stays current
    sel.update(policy="quest")
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 1, tables, lens, [0])
    kernels.reshape_and_cache(torch.randn(1, 2, 16) * 5, torch.randn(1, 2, 16), kv.k_caches[1], kv.v_caches[1],
                              kv.metas[1], torch.tensor([L]), kv.qkeys[1])
    fresh = torch.zeros_like(kv.qkeys[1])
    qr.quantize_keys(kv.k_caches[1], kv.metas[1], fresh, torch.tensor([L]))
    assert torch.equal(kv.qkeys[1][L // 8], fresh[L // 8])
    # writes that bypassed the copy are caught up when twostage next meets the cache
    kv.k_caches[1][5] += 3.0
    kv.metas[1][5] += 3.0
    sel.update(policy="twostage", quant_bits=4, budget=32, dense_layers=0)
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 1, tables, lens, [0])
    qr.quantize_keys(kv.k_caches[1], kv.metas[1], fresh, torch.tensor([5 * 8 + 7]))
    assert torch.equal(kv.qkeys[1][5], fresh[5])


def test_switching_key_bits_back_catches_the_older_copy_up():
    """8 -> 4 -> 8 bits on one policy: writes made while the 4-bit copy was current
    bypassed the 8-bit one, which prepare() must re-quantise when it becomes current again."""
    torch.manual_seed(2)
    kv = KVCache(1, 6, 8, 2, 16)
    slots = torch.arange(30)
    kernels.reshape_and_cache(torch.randn(30, 2, 16), torch.randn(30, 2, 16), kv.k_caches[0], kv.v_caches[0],
                              kv.metas[0], slots)
    sel = PageSelector("twostage", budget=16, dense_layers=0, quant_bits=8)
    assert sel.prepare(kv) is kv.qkeys and kv.qkey_bits == 8
    sel.update(quant_bits=4)
    assert sel.prepare(kv) is kv.qkeys and kv.qkey_bits == 4
    kernels.reshape_and_cache(torch.randn(10, 2, 16) * 4, torch.randn(10, 2, 16), kv.k_caches[0], kv.v_caches[0],
                              kv.metas[0], torch.arange(30, 40), kv.qkeys[0])   # the 4-bit copy only
    sel.update(quant_bits=8)
    copy = sel.prepare(kv)[0]
    assert kv.qkey_bits == 8 and torch.equal(copy, _all_qkeys(kv, 8))
    assert PageSelector("quest").prepare(kv) is None   # a policy without a key copy: nothing to do


def test_the_runner_prepares_selection_before_every_decode_step():
    from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
    from tinyserve_core.model import LlamaForCausalLM, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    sel = PageSelector("twostage", budget=16, dense_layers=0)
    calls = []
    prepare, select = sel.prepare, sel.select
    sel.prepare = lambda kv: calls.append(("prepare", kv)) or prepare(kv)
    sel.select = lambda *a: calls.append(("select", a[2])) or select(*a)
    runner = ModelRunner(LlamaForCausalLM(cfg).eval(), 16, 4, selector=sel)
    runner.prefill([PrefillItem(0, list(range(1, 30)), 0, list(range(8)))])
    for s in range(3):
        calls.clear()
        runner.decode([DecodeItem(0, 5, 29 + s, list(range(8)))])
        # host work first: a graph replay calls no select() that could do it
        assert calls[0][0] == "prepare" and all(kv is runner.kv for _, kv in calls)
    assert torch.equal(runner.kv.qkeys[1][:8], _all_qkeys(runner.kv, runner.kv.qkey_bits, layer=1)[:8])
    # the int8 bound copy follows the same writes (the model's own decode steps)
    assert torch.equal(runner.kv.qbounds[1][:8], _all_qbounds(runner.kv, layer=1)[:8])


def test_oracle_p_keeps_the_fewest_pages_holding_the_true_mass(make_kv):
    torch.manual_seed(0)
    kv, tables, lens = make_kv([300, 170], num_kv_heads=2, block_size=8)
    q = torch.randn(2, 4, 16) * 3
    ctx = _ctx(kv, tables, lens, q)
    sel = make_policy("oracle_p", top_p_mass=0.8, dense_layers=0).select(ctx)
    for b, L in enumerate(lens.tolist()):
        n = (L + 7) // 8
        logits = attention_logits(q[b], context_keys(kv.k_caches[0], tables[b], L), SCALE)
        mass = page_mass(logits, 8).view(2, 2, n).mean(1)   # [Hkv, n]
        for h in range(2):
            kept = sorted(_sets(sel.page_indices)[b][h])
            assert n - 1 in kept
            got = float(mass[h, kept].sum())
            assert got >= 0.8 - 1e-5
            # minimal: without its least-attended page (other than the forced one) it falls short
            drop = min((p for p in kept if p != n - 1), key=lambda p: float(mass[h, p]))
            assert got - float(mass[h, drop]) < 0.8
    tighter = make_policy("oracle_p", top_p_mass=0.5, dense_layers=0).select(ctx)
    assert (tighter.page_indices >= 0).sum() < (sel.page_indices >= 0).sum()
