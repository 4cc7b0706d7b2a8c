"""The statistics computed for the whole batch with tensor ops equal the per-sequence
computation they replaced (tests/selection/stats_reference.py), and the one-step-late
reading delivers every step exactly once, in order."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core.selection import PageSelector
from tinyserve_core.selection.selector import _softmax_scale

from stats_reference import ReferenceStats, detail_records  # noqa: E402  (this folder is on sys.path under pytest)

LAYER = type("Attn", (), {"scale": 0.125})()


def _reference(sel: PageSelector, q, kv, layer, tables, lens, ids):
    """The reference statistics of one select call, from the same policy decision."""
    from tinyserve_core.selection.base import SelectContext
    ctx = SelectContext(query=q, k_cache=kv.k_caches[layer], v_cache=kv.v_caches[layer], meta=kv.metas[layer],
                        block_tables=tables, seq_lens=lens, seq_ids=list(ids), layer_idx=layer,
                        scale=_softmax_scale(LAYER, q.shape[-1]), block_size=int(kv.k_caches[layer].shape[1]))
    decision = sel.policy.select(ctx)
    return ctx, decision


def _close(a, b):
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == pytest.approx(b, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("policy,params", [("quest", {"budget": 48}), ("adaptive", {"budget": 0.5, "top_p_mass": 0.9}),
                                           ("streaming", {"budget": 32}), ("quest", {"budget": 1.0})])
@pytest.mark.parametrize("seed", [0, 1])
def test_device_statistics_equal_the_reference(make_kv, policy, params, seed):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, 300, (5,), generator=g).tolist()
    kv, tables, lens_t = make_kv(lens, num_kv_heads=2, head_dim=16, block_size=8, num_layers=2, seed=seed)
    sel = PageSelector(policy, dense_layers=0, stats=True, **params)
    ref = ReferenceStats(keep_records=True)
    ids = [10, 11, 12, 13, 14]
    for _ in range(2):
        q = torch.randn(5, 4, 16, generator=g) * 2
        for layer in range(2):
            pages = sel.select(LAYER, q, kv, layer, tables, lens_t, ids)
            ctx, decision = _reference(sel, q, kv, layer, tables, lens_t, ids)
            assert torch.equal(decision.page_indices, pages) if pages is not None else decision.page_indices is None
            ref.record(ctx, decision, policy)
        got, want = sel.take_summary(), ref.take_summary()
        for field, value in want.as_dict().items():
            if field in ("step",):
                continue
            got_v = getattr(got, field)
            if isinstance(value, tuple):
                assert len(got_v) == len(value) and all(_close(a, b) for a, b in zip(got_v, value)), field
            else:
                assert got_v == value, field
        dev, exp = detail_records(got.detail), ref.records
        ref.records = []
        assert len(dev) == len(exp) == 5 * 2 * 2
        for a, b in zip(dev, exp):
            assert (a.seq_id, a.layer, a.kv_head, a.pages, a.oracle_pages, a.num_pages, a.bound_violations,
                    a.budget_pages) == (b.seq_id, b.layer, b.kv_head, b.pages, b.oracle_pages, b.num_pages,
                                        b.bound_violations, b.budget_pages)
            assert all(_close(x, y) for x, y in zip(a.scores, b.scores)) and len(a.scores) == len(b.scores)
            for f in ("mass_recall", "oracle_mass", "selection_recall"):
                assert _close(getattr(a, f), getattr(b, f)), f
            assert (a.entropy is None) == (b.entropy is None)
            if a.entropy is not None:
                assert _close(a.entropy, b.entropy)


def test_a_broken_bound_counts_the_same_violations(make_kv):
    kv, tables, lens = make_kv([200, 77, 130])
    kv.metas[0][:, 1] = kv.metas[0][:, 0]  # max := min: the "bound" now lies
    sel = PageSelector("quest", budget=64, dense_layers=0, stats=True)
    ref = ReferenceStats()
    q = torch.randn(3, 4, 16)
    sel.select(LAYER, q, kv, 0, tables, lens, [0, 1, 2])
    ref.record(*_reference(sel, q, kv, 0, tables, lens, [0, 1, 2]), "quest")
    got, want = sel.take_summary().bound_violations, ref.take_summary().bound_violations
    assert got == want and got[0] > 0


def test_one_step_late_delivers_every_step_once_in_order(make_kv):
    kv, tables, lens = make_kv([90, 170], num_layers=2)
    sel = PageSelector("quest", budget=32, dense_layers=0, stats=True)
    ref = ReferenceStats()
    expected, delivered = [], []
    for step in range(6):
        q = torch.randn(2, 4, 16)
        for layer in range(2):
            sel.select(LAYER, q, kv, layer, tables, lens, [3, 4])
            ref.record(*_reference(sel, q, kv, layer, tables, lens, [3, 4]), "quest")
        expected.append(ref.take_summary())
        sel.end_step([3, 4])                      # what the runner does after the forward
        got = sel.collect(keep_newest=True)       # what the engine does once the next is launched
        assert [s.step for s in got] == ([] if step == 0 else [step - 1])
        delivered += got
        assert [len(detail_records(s.detail)) for s in got] == ([] if step == 0 else [2 * 2 * 2])
    delivered += sel.collect()                    # the end of the run: the last step too
    assert sel.collect() == [] and [s.step for s in delivered] == list(range(6))
    for got, want in zip(delivered, expected):
        assert got.mass_recall == pytest.approx(want.mass_recall, rel=1e-5)
        assert got.selection_recall == pytest.approx(want.selection_recall)
    assert list(sel.stats.history) == delivered


def test_tier_state_of_a_finished_sequence_goes_after_its_last_step_is_accounted(make_kv):
    kv, tables, lens = make_kv([256])
    sel = PageSelector("quest", budget=64, dense_layers=0, tier_pages=3)
    pages = sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [7])
    sel.end_step([7])
    sel.forget(7)                                  # finished while its step is in flight
    assert sel.collect() == []                     # no statistics, but the tiers counted it
    union = {int(p) for p in pages.flatten() if p >= 0}
    assert sel.tiers.totals.hits + sel.tiers.totals.misses == len(union)
    assert len(sel.tiers.resident_pages(7, 0)) == 0   # and then forgot it


@pytest.mark.parametrize("params", [{"budget": 40}, {"budget": 0.3, "recent_pages": 1, "sink_pages": 1},
                                    {"budget": 24, "recent_pages": 6}])
def test_batched_h2o_equals_the_per_sequence_version(make_kv, params):
    """Same pages, step after step, with a sequence that joins late and one whose
    context grows past the table width it started with."""
    from h2o_reference import ReferenceH2O  # noqa: E402  (this folder is on sys.path under pytest)
    from tinyserve_core.selection import make_policy
    from tinyserve_core.selection.base import SelectContext
    g = torch.Generator().manual_seed(3)
    kv, tables, lens = make_kv([300, 170, 90], num_kv_heads=2, block_size=8, num_layers=1, seed=3)
    new, old = make_policy("h2o", dense_layers=0, **params), ReferenceH2O(dense_layers=0, **params)
    for step in range(5):
        rows = [0, 1] if step < 2 else [0, 1, 2]
        cut = lens[rows] - 4 + step                       # contexts grow by one token a step
        width = int((cut.max() + 7) // 8)
        q = torch.randn(len(rows), 4, 16, generator=g)
        ctx = SelectContext(query=q, k_cache=kv.k_caches[0], v_cache=kv.v_caches[0], meta=kv.metas[0],
                            block_tables=tables[rows][:, :width].contiguous(), seq_lens=cut.to(torch.int32),
                            seq_ids=[10 + r for r in rows], layer_idx=0, scale=0.25, block_size=8)
        a, b = new.select(ctx), old.select(ctx)
        assert torch.equal(a.budget_pages, b.budget_pages)
        for r in range(len(rows)):
            n = int((cut[r] + 7) // 8)
            for h in range(2):
                got = {int(x) for x in a.page_indices[r, h] if x >= 0}
                want = set(range(n)) if b.page_indices is None else {int(x) for x in b.page_indices[r, h] if x >= 0}
                assert got == want, (step, r, h)
    new.forget(10)
    assert new.tracked_sequences() == [11, 12]


def test_a_step_without_selection_does_not_hold_back_the_previous_one(make_kv):
    kv, tables, lens = make_kv([90])
    sel = PageSelector("quest", budget=32, dense_layers=0, stats=True)
    sel.select(LAYER, torch.randn(1, 4, 16), kv, 0, tables, lens, [1])
    sel.end_step([1])
    assert sel.collect(keep_newest=True) == []          # decode step 0 launched: it stays
    assert [s.step for s in sel.collect(keep_newest=True)] == [0]   # a prefill step next: delivered
