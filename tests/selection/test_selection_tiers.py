"""Two-tier page residency: the counts add up and LRU/LFU evict as defined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError
from tinyserve_core.kv.tiers import TieredPageCache
from tinyserve_core.selection import PageSelector

LAYER = type("Attn", (), {"scale": 0.25})()


def test_prefill_leaves_newest_pages_resident():
    t = TieredPageCache(3)
    acc = t.access(0, 0, 10, [0, 8, 9], page_bytes=100)
    assert t.resident_pages(0, 0).tolist() == [0, 8, 9]
    assert (acc.hits, acc.misses, acc.bytes_moved) == (2, 1, 100)
    assert acc.resident_before.tolist() == [False] * 7 + [True] * 3


def test_lru_evicts_least_recently_selected():
    t = TieredPageCache(3, "lru")
    t.access(0, 0, 6, [0, 1, 5], 1)          # resident {0,1,5}
    for _ in range(5):
        t.access(0, 0, 6, [0, 5], 1)         # page 0 hot, page 1 idle
    t.access(0, 0, 6, [2, 5], 1)             # 2 misses -> evict 1 (LRU)
    assert t.resident_pages(0, 0).tolist() == [0, 2, 5]
    t.access(0, 0, 6, [3, 5], 1)             # now 0 was used before 2 -> LRU drops 0
    assert t.resident_pages(0, 0).tolist() == [2, 3, 5]


def test_lfu_keeps_frequently_selected_page():
    t = TieredPageCache(3, "lfu", decay=0.9)
    t.access(0, 0, 6, [0, 1, 5], 1)
    for _ in range(5):
        t.access(0, 0, 6, [0, 5], 1)
    t.access(0, 0, 6, [2, 5], 1)
    assert t.resident_pages(0, 0).tolist() == [0, 2, 5]
    t.access(0, 0, 6, [3, 5], 1)             # LFU keeps hot page 0, drops once-used 2
    assert t.resident_pages(0, 0).tolist() == [0, 3, 5]


@pytest.mark.parametrize("decay,survivor", [(1.0, 0), (0.5, 1)])
def test_lfu_frequency_decays(decay, survivor):
    t = TieredPageCache(3, "lfu", decay=decay)
    for _ in range(4):
        t.access(0, 0, 6, [0, 5], 1)         # page 0: hot long ago
    for _ in range(3):
        t.access(0, 0, 6, [1, 5], 1)         # page 1: warm lately
    t.access(0, 0, 6, [2, 5], 1)             # one of 0, 1 must go
    # without decay 4 old hits beat 3 recent ones; halving each step forgets them
    assert t.resident_pages(0, 0).tolist() == sorted([survivor, 2, 5])


def test_new_pages_arrive_resident_and_last_page_is_pinned():
    t = TieredPageCache(2, "lru")
    t.access(0, 0, 4, [0, 1, 2, 3], 1)       # more selected than fit: streamed through
    assert 3 in t.resident_pages(0, 0).tolist()
    acc = t.access(0, 0, 5, [4], 1)          # page 4 was just written on the fast tier
    assert (acc.hits, acc.misses) == (1, 0)
    assert len(t.resident_pages(0, 0)) == 2


def test_hits_plus_misses_equal_selected_pages_through_the_selector(make_kv):
    kv, tables, lens = make_kv([300, 123, 64], num_kv_heads=2, block_size=8, num_layers=3)
    sel = PageSelector("quest", budget=48, dense_layers=1, tier_pages=4, tier_policy="lfu", stats=True)
    selected_unique = 0
    for step in range(6):
        q = torch.randn(3, 4, 16)
        per_layer = {}
        for layer in range(3):
            pi = sel.select(LAYER, q, kv, layer, tables, lens, [0, 1, 2])
            if layer == 0:
                assert pi is None
                continue
            per_layer[layer] = sum(len(np.unique(r[r >= 0])) for r in pi.numpy())
        selected_unique += sum(per_layer.values())
        s = sel.take_summary()
        assert s.layers == (1, 2)
        for i, layer in enumerate(s.layers):
            assert s.tier_hits[i] + s.tier_misses[i] == per_layer[layer]
    tot = sel.tiers.totals
    assert tot.hits + tot.misses == selected_unique
    assert tot.bytes_moved == tot.misses * 2 * 8 * 2 * 16 * 4  # K+V, bs 8, 2 heads, D 16, f32
    assert 0.0 < tot.hit_rate < 1.0
    for li in (1, 2):  # the cap holds after every step
        for seq in range(3):
            assert len(sel.tiers.resident_pages(seq, li)) <= 4
    sel.forget(1)
    assert len(sel.tiers.resident_pages(1, 1)) == 0


def test_per_head_tier_counts_in_the_records_add_up(make_kv):
    kv, tables, lens = make_kv([256], num_kv_heads=2, block_size=16)
    sel = PageSelector("quest", budget=64, dense_layers=0, tier_pages=3, stats=True)
    resident = np.arange(16) >= 16 - 3   # first sight: the newest pages are on the fast tier
    for _ in range(3):
        sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [5])
        d = sel.take_summary().detail
        assert d.num_records == 2
        # per head: hits are its selected pages resident before the step's access
        want = (d.selected[0, 0] & resident[None, :d.selected.shape[-1]]).sum(-1)
        assert d.tier_hits[0, 0].tolist() == want.tolist()
        assert (d.tier_hits + d.tier_misses == d.channel("pages_selected")).all()
        assert (d.selected.sum(-1) == 4).all()
        resident[:] = False
        resident[sel.tiers.resident_pages(5, 0)] = True


@pytest.mark.parametrize("kwargs,field", [
    ({"capacity_pages": 0}, "tier_pages"),
    ({"capacity_pages": 2.5}, "tier_pages"),
    ({"capacity_pages": 4, "policy": "fifo"}, "tier_policy"),
    ({"capacity_pages": 4, "decay": 0.0}, "tier_decay"),
    ({"capacity_pages": 4, "decay": 1.5}, "tier_decay"),
])
def test_bad_tier_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        TieredPageCache(**kwargs)
    assert e.value.field == field
