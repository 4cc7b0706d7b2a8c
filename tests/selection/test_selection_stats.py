"""Statistics against the truth: the bound holds, recalls mean what they say."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core.selection import PageSelector, summarize_history
from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass

from stats_reference import detail_records  # noqa: E402  (this folder is on sys.path under pytest)

LAYER = type("Attn", (), {"scale": 0.125})()


@pytest.mark.parametrize("hq,hkv,d,bs", [(4, 4, 16, 8), (8, 2, 32, 16), (12, 3, 64, 32), (7, 1, 8, 16)])
def test_zero_bound_violations_on_random_data(make_kv, hq, hkv, d, bs):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        lens = torch.randint(1, 400, (4,), generator=g).tolist()
        kv, tables, lens_t = make_kv(lens, num_kv_heads=hkv, head_dim=d, block_size=bs, seed=seed)
        q = torch.randn(4, hq, d, generator=g) * 3
        sel = PageSelector("quest", budget=0.25, dense_layers=0, stats=True)
        sel.select(LAYER, q, kv, 0, tables, lens_t, [0, 1, 2, 3])
        s = sel.take_summary()
        assert s.bound_violations == (0,)
        assert s.records == (4 * hkv,)


def test_broken_bound_is_caught(make_kv):
    kv, tables, lens = make_kv([200, 77])
    kv.metas[0][:, 1] = kv.metas[0][:, 0]  # max := min: the "bound" now lies
    sel = PageSelector("quest", budget=64, dense_layers=0, stats=True)
    sel.select(LAYER, torch.randn(2, 4, 16), kv, 0, tables, lens, [0, 1])
    assert sel.take_summary().bound_violations[0] > 0


def test_recalls_match_a_direct_computation(make_kv):
    kv, tables, lens = make_kv([333], num_kv_heads=2, block_size=16)
    q = torch.randn(1, 4, 16)
    sel = PageSelector("quest", budget=80, dense_layers=0, stats=True)
    pi = sel.select(LAYER, q, kv, 0, tables, lens, [42])
    d = sel.take_summary().detail      # the records come when the step is collected
    assert d.layers.tolist() == [0] and d.seq_ids.tolist() == [42] and d.num_heads == 2
    evs = detail_records(d)
    assert [e.kv_head for e in evs] == [0, 1]
    keys = context_keys(kv.k_caches[0], tables[0], 333)
    mass = page_mass(attention_logits(q[0], keys, 0.125), 16).view(2, 2, -1).mean(1)
    for h, e in enumerate(evs):
        pages = sorted(int(p) for p in pi[0, h] if p >= 0)
        assert list(e.pages) == pages and e.num_pages == len(pages) == 5
        assert e.mass_recall == pytest.approx(float(mass[h, pages].sum()), rel=1e-5)
        oracle = torch.topk(mass[h], 5).indices.tolist()
        assert set(e.oracle_pages) == set(oracle)
        assert e.selection_recall == pytest.approx(len(set(oracle) & set(pages)) / 5)
        assert len(e.scores) == 21 and e.bound_violations == 0 and e.seq_id == 42


def test_full_budget_has_full_recall_and_summary_per_layer(make_kv):
    kv, tables, lens = make_kv([100, 260], num_layers=3)
    sel = PageSelector("adaptive", budget=1.0, top_p_mass=1.0, dense_layers=1, stats=True)
    for _ in range(2):
        q = torch.randn(2, 4, 16)
        for layer in range(3):
            assert sel.select(LAYER, q, kv, layer, tables, lens, [0, 1]) is None
        s = sel.take_summary()
        assert s.layers == (1, 2) and s.records == (4, 4)
        assert s.mass_recall == pytest.approx((1.0, 1.0))
        assert s.selection_recall == pytest.approx((1.0, 1.0))
        assert s.pages_selected == pytest.approx(((7 + 17) / 2,) * 2)
        assert all(math.isnan(e) for e in s.entropy)  # decided on the host: no estimate made
    agg = summarize_history(sel.stats.history)
    assert agg[1]["records"] == 8 and agg[2]["mass_recall"] == pytest.approx(1.0)


def test_sparse_recall_is_below_one_and_quest_beats_streaming(make_kv):
    def keys(layer, b, L, H, D, g):
        k = torch.randn(L, H, D, generator=g)
        k[200:208] += 2.0  # a needle far from the recent window
        return k
    kv, tables, lens = make_kv([640], block_size=8, key_fn=keys)
    q = torch.ones(1, 4, 16)
    recall = {}
    for name in ("quest", "streaming", "adaptive"):
        sel = PageSelector(name, budget=64, dense_layers=0, stats=True)
        sel.select(LAYER, q, kv, 0, tables, lens, [0])
        s = sel.take_summary()
        recall[name] = s.mass_recall[0]
        assert math.isnan(s.entropy[0]) == (name != "adaptive")
    assert recall["streaming"] < recall["quest"] < 1.0
    assert recall["adaptive"] <= recall["quest"] + 1e-6  # same ranking, at most the same pages


def test_stats_off_costs_nothing_and_can_be_switched_live(make_kv):
    kv, tables, lens = make_kv([128])
    sel = PageSelector("quest", budget=32, dense_layers=0)
    assert sel.stats is None
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [0])
    assert sel.take_summary() is None
    sel.set_stats(True)
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [0])
    s = sel.take_summary()
    assert s is not None and s.detail.num_records == 2
    sel.set_stats(False)
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [0])
    assert sel.take_summary() is None
