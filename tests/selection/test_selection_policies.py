"""Policies on random paged caches: the rules each one promises."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import reference
from tinyserve_core.selection import PageSelector, make_policy
from tinyserve_core.selection.base import SelectContext

LAYER = type("Attn", (), {"scale": 0.25})()


def _ctx(kv, tables, lens, q, layer_idx=0, seq_ids=None):
    return SelectContext(query=q, k_cache=kv.k_caches[layer_idx], v_cache=kv.v_caches[layer_idx],
                         meta=kv.metas[layer_idx], block_tables=tables, seq_lens=lens,
                         seq_ids=list(seq_ids or range(len(lens))), layer_idx=layer_idx,
                         scale=0.25, block_size=kv.block_size)


def _sets(page_indices):
    return [[set(r[r >= 0].tolist()) for r in row] for row in page_indices]


def _attend(kv, tables, lens, q, page_indices, layer=0):
    return reference.paged_decode_attention(q, kv.k_caches[layer], kv.v_caches[layer],
                                            tables, lens, 0.25, page_indices)


@pytest.mark.parametrize("name", ["dense", "quest", "adaptive", "streaming", "h2o", "oracle"])
def test_full_budget_is_exactly_dense(make_kv, name):
    kv, tables, lens = make_kv([37, 130, 64], num_kv_heads=2, block_size=8)
    q = torch.randn(3, 4, 16)
    params = {} if name == "dense" else {"budget": 1.0, "dense_layers": 0}
    if name == "adaptive":
        params["top_p_mass"] = 1.0
    sel = PageSelector(name, **params)
    pi = sel.select(LAYER, q, kv, 0, tables, lens, [0, 1, 2])
    assert pi is None
    assert torch.equal(_attend(kv, tables, lens, q, pi), _attend(kv, tables, lens, q, None))


def test_dense_policy_equals_no_selector_at_every_layer(make_kv):
    kv, tables, lens = make_kv([300, 17], num_layers=3)
    q = torch.randn(2, 4, 16)
    sel = PageSelector("dense", stats=True)
    for layer in range(3):
        assert sel.select(LAYER, q, kv, layer, tables, lens, [0, 1]) is None
    assert sel.take_summary() is None  # nothing to measure: dense is exempt


def test_selecting_every_page_explicitly_matches_dense(make_kv):
    kv, tables, lens = make_kv([45, 100], block_size=16)
    q = torch.randn(2, 4, 16)
    M = tables.shape[1]
    every = torch.full((2, 2, M), -1, dtype=torch.int32)
    for b, L in enumerate(lens.tolist()):
        every[b, :, : (L + 15) // 16] = torch.arange((L + 15) // 16, dtype=torch.int32)
    torch.testing.assert_close(_attend(kv, tables, lens, q, every), _attend(kv, tables, lens, q, None))


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2), (6, 1)])
@pytest.mark.parametrize("block_size", [8, 16, 32])
def test_quest_takes_top_bounds_keeps_last_and_sinks(make_kv, hq, hkv, block_size):
    lens = [700, 95, 33, 250]
    kv, tables, lens_t = make_kv(lens, num_kv_heads=hkv, block_size=block_size, seed=block_size + hq)
    q = torch.randn(len(lens), hq, 16)
    pol = make_policy("quest", budget=128, sink_pages=1, dense_layers=0)
    ctx = _ctx(kv, tables, lens_t, q)
    out = pol.select(ctx)
    scores = reference.page_scores(q, kv.metas[0], tables, lens_t, 0.25, block_size)
    k_budget = -(-128 // block_size)
    for b, L in enumerate(lens):
        n = (L + block_size - 1) // block_size
        for h in range(hkv):
            got = _sets(out.page_indices)[b][h]
            assert n - 1 in got and 0 in got
            k = min(max(k_budget, 2 if n > 1 else 1), n)
            assert len(got) == k
            rest = sorted((p for p in range(1, n - 1)), key=lambda p: -float(scores[b, h, p]))
            want = {0, n - 1} | set(rest[: k - len({0, n - 1})])
            # ties in the bound may legitimately swap; compare the scores picked
            assert sorted(float(scores[b, h, p]) for p in got - {0, n - 1}) == pytest.approx(
                sorted(float(scores[b, h, p]) for p in want - {0, n - 1}))


def test_quest_fraction_budget_and_batch_matches_single(make_kv):
    lens = [512, 129, 1000]
    kv, tables, lens_t = make_kv(lens, block_size=16)
    q = torch.randn(3, 4, 16)
    pol = make_policy("quest", budget="1/8", dense_layers=0)
    batch = _sets(pol.select(_ctx(kv, tables, lens_t, q)).page_indices)
    for b, L in enumerate(lens):
        one = pol.select(_ctx(kv, tables[b:b + 1], lens_t[b:b + 1], q[b:b + 1])).page_indices
        assert _sets(one)[0] == batch[b]
        n = (L + 15) // 16
        assert len(batch[b][0]) == -(-n // 8)  # ceil(n/8): 32, 17, 63


def test_first_layers_stay_dense(make_kv):
    kv, tables, lens = make_kv([400], num_layers=4)
    q = torch.randn(1, 4, 16)
    for name in ("quest", "adaptive", "streaming", "h2o", "oracle"):
        sel = PageSelector(name, budget=64, dense_layers=2)
        got = [sel.select(LAYER, q, kv, i, tables, lens, [7]) for i in range(4)]
        assert got[0] is None and got[1] is None, name
        assert got[2] is not None and got[3] is not None, name


def _peaked_or_flat(peaked: bool):
    def keys(layer, b, L, H, D, g):
        k = torch.randn(L, H, D, generator=g) * 0.05
        if peaked:
            k[100:104] = 4.0  # one page whose keys align with an all-ones query
        return k
    return keys


def test_adaptive_takes_fewer_pages_for_peaked_queries(make_kv):
    q = torch.ones(1, 4, 16)
    pol = make_policy("adaptive", top_p_mass=0.9, budget=1.0, dense_layers=0)
    picked = {}
    for peaked in (True, False):
        kv, tables, lens = make_kv([640], block_size=16, key_fn=_peaked_or_flat(peaked))
        out = pol.select(_ctx(kv, tables, lens, q))
        assert out.page_indices is not None or not peaked
        n_sel = (out.page_indices >= 0).sum(-1) if out.page_indices is not None else out.budget_pages
        picked[peaked] = (n_sel.float().mean().item(), out.entropy.mean().item())
        assert torch.equal(out.budget_pages, torch.as_tensor(n_sel).to(out.budget_pages.dtype))
    assert picked[True][0] <= 3 and picked[False][0] >= 20
    assert picked[True][1] < picked[False][1]


def test_adaptive_respects_min_and_max_budget(make_kv):
    kv, tables, lens = make_kv([640], block_size=16, key_fn=_peaked_or_flat(True))
    q = torch.ones(1, 4, 16)
    out = make_policy("adaptive", top_p_mass=0.9, budget=1.0, min_budget=128, dense_layers=0).select(
        _ctx(kv, tables, lens, q))
    assert ((out.page_indices >= 0).sum(-1) == 8).all()
    kv, tables, lens = make_kv([640], block_size=16, key_fn=_peaked_or_flat(False))
    out = make_policy("adaptive", top_p_mass=0.99, budget=64, dense_layers=0).select(_ctx(kv, tables, lens, q))
    assert ((out.page_indices >= 0).sum(-1) == 4).all()


def test_streaming_keeps_sinks_and_recent_window(make_kv):
    kv, tables, lens = make_kv([200, 90], block_size=8)
    q = torch.randn(2, 4, 16)
    out = make_policy("streaming", budget=48, sink_pages=2, dense_layers=0).select(_ctx(kv, tables, lens, q))
    sets = _sets(out.page_indices)
    assert sets[0] == [{0, 1, 21, 22, 23, 24}] * 2  # 25 pages: 2 sinks + 4 most recent
    assert sets[1] == [{0, 1, 8, 9, 10, 11}] * 2


def test_h2o_keeps_heavy_hitters_and_forgets(make_kv):
    def keys(layer, b, L, H, D, g):
        k = torch.randn(L, H, D, generator=g) * 0.05
        k[40:48] = 3.0  # page 5 draws the attention of an all-ones query
        return k
    kv, tables, lens = make_kv([320], block_size=8, key_fn=keys)
    q = torch.ones(1, 4, 16)
    pol = make_policy("h2o", budget=64, dense_layers=0)
    for step in range(3):
        out = pol.select(_ctx(kv, tables, lens, q, seq_ids=[9]))
        sets = _sets(out.page_indices)[0]
        for s in sets:
            assert len(s) == 8 and 5 in s and {36, 37, 38, 39} <= s
    assert pol.tracked_sequences() == [9]
    pol.forget(9)
    assert pol.tracked_sequences() == []


def test_h2o_evictions_are_permanent(make_kv):
    kv, tables, lens = make_kv([160], block_size=8)
    pol = make_policy("h2o", budget=40, dense_layers=0)
    first = _sets(pol.select(_ctx(kv, tables, lens, torch.randn(1, 4, 16))).page_indices)[0]
    for _ in range(4):  # whatever later queries want, a dropped page never returns
        later = _sets(pol.select(_ctx(kv, tables, lens, torch.randn(1, 4, 16))).page_indices)[0]
        for a, b in zip(first, later):
            assert b <= a


def test_adaptive_is_exact_top_p_when_the_bound_is_tight(make_kv):
    """Keys constant within each page make the bound equal every logit, so the
    estimate is the true page mass: the choice must be the smallest set (page being
    written first, then by mass) whose true mass reaches top_p_mass."""
    def keys(layer, b, L, H, D, g):
        per_page = torch.randn((L + 7) // 8, H, D, generator=g) * 0.7
        return per_page.repeat_interleave(8, dim=0)[:L]
    kv, tables, lens = make_kv([203, 96], num_kv_heads=2, block_size=8, key_fn=keys)
    q = torch.randn(2, 2, 16)  # one query head per kv-head: no group max
    out = make_policy("adaptive", top_p_mass=0.8, budget=1.0, dense_layers=0).select(_ctx(kv, tables, lens, q))
    from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass
    for b, L in enumerate(lens.tolist()):
        n = (L + 7) // 8
        mass = page_mass(attention_logits(q[b], context_keys(kv.k_caches[0], tables[b], L), 0.25), 8)
        for h in range(2):
            order = [n - 1] + [int(p) for p in torch.argsort(mass[h], descending=True) if int(p) != n - 1]
            cum, want = 0.0, set()
            for p in order:
                want.add(p)
                cum += float(mass[h, p])
                if cum >= 0.8 - 1e-6:
                    break
            assert _sets(out.page_indices)[b][h] == want


def test_oracle_keeps_the_pages_with_the_most_true_attention(make_kv):
    """The oracle's pages carry at least as much true attention mass as quest's at the same
    budget (it ranks by that mass), and it keeps the page being written."""
    torch.manual_seed(0)  # random queries, but the same ones every run: the 3% margin is for these
    kv, tables, lens = make_kv([300, 170], num_kv_heads=2, block_size=8)
    q = torch.randn(2, 4, 16) * 2
    stats = {}
    for name in ("oracle", "quest"):
        sel = PageSelector(name, budget=64, dense_layers=0, stats=True)
        pi = sel.select(LAYER, q, kv, 0, tables, lens, [0, 1])
        for b, L in enumerate(lens.tolist()):
            assert ((L + 7) // 8 - 1) in pi[b, 0].tolist()  # the page being written
        stats[name] = sel.take_summary()
    got, best = stats["oracle"].mass_recall[0], stats["oracle"].oracle_mass[0]
    assert got >= stats["quest"].mass_recall[0] - 1e-6
    assert 0.97 * best <= got <= best + 1e-6  # the best set, up to the forced page being written
