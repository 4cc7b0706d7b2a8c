"""The Cache selection view's data from the steps' columnar records: the heatmap of one
(sequence, layer, kv-head) is cut from the arrays of the steps it ran in, the recall
series are the per-layer means of each step."""

from __future__ import annotations

import numpy as np
import pytest

from app.serving.selection_data import SelectionHistory
from tinyserve_core.observe.record import StepRecord
from tinyserve_core.selection.detail import CHANNELS, SelectionDetail
from tinyserve_core.selection.stats import step_summary


def _step(step, seq_ids, ctx, rng, layers=(1, 2), H=2, tiers=False):
    L, B, P = len(layers), len(seq_ids), max(ctx)
    valid = np.arange(P)[None, :] < np.array(ctx)[:, None]                     # [B, P]
    sel = (rng.random((L, B, H, P)) < 0.4) & valid[None, :, None, :]
    orc = (rng.random((L, B, H, P)) < 0.4) & valid[None, :, None, :]
    scores = np.where(valid[None, :, None, :], rng.standard_normal((L, B, H, P)), np.nan).astype(np.float32)
    per_head = np.zeros((L, B, H, len(CHANNELS)), np.float32)
    per_head[..., CHANNELS.index("pages_selected")] = sel.sum(-1)
    per_head[..., CHANNELS.index("context_pages")] = np.array(ctx)[None, :, None]
    per_head[..., CHANNELS.index("selection_recall")] = rng.random((L, B, H))
    per_head[..., CHANNELS.index("mass_recall")] = rng.random((L, B, H))
    hits = misses = None
    if tiers:
        hits = (sel.sum(-1) // 2).astype(np.int64)
        misses = sel.sum(-1) - hits
    d = SelectionDetail("quest", np.array(layers), np.array(seq_ids), per_head, sel, orc, scores, None, hits, misses)
    s = step_summary(step, "quest", list(layers), per_head, None, d)
    return StepRecord(step=step, t_start=0.0, t_end=0.0, phase="decode", seq_ids=tuple(seq_ids), selection=(s,))


def test_a_view_is_the_records_of_its_key_step_after_step():
    rng = np.random.default_rng(0)
    hist = SelectionHistory()
    recs = [_step(3, [7, 8], [4, 6], rng), _step(4, [8], [6], rng), _step(5, [8, 9], [7, 2], rng, tiers=True)]
    for r in recs:
        hist.ingest(r)
    assert list(hist.sequences()) == [9, 8, 7]
    v = hist.view((8, 2, 1))
    assert v.key == (8, 2, 1) and v.steps.tolist() == [3, 4, 5] and v.num_pages.tolist() == [6, 6, 7]
    assert v.selected.shape == (7, 3) and v.has_oracle and v.candidates is None
    rows = [(recs[0], 1), (recs[1], 0), (recs[2], 0)]    # (record, row of seq 8)
    for j, (r, b) in enumerate(rows):
        d = r.selection[0].detail
        n = int(v.num_pages[j])
        assert np.array_equal(v.selected[:n, j], d.selected[1, b, 1, :n])
        assert np.array_equal(v.oracle[:n, j], d.oracle[1, b, 1, :n])
        assert np.allclose(v.scores[:n, j], d.scores[1, b, 1, :n]) and np.isnan(v.scores[n:, j]).all()
    assert v.layers == [1, 2] and v.heads == [0, 1] and v.series_layers == [1, 2]
    # per step and layer, the mean over the step's rows and heads
    assert v.series_steps.tolist() == [3, 4, 5]
    for i, r in enumerate(recs):
        d = r.selection[0].detail
        assert v.selection_recall[i] == pytest.approx(d.channel("selection_recall").mean(axis=(1, 2)))
        assert v.mass_recall[i] == pytest.approx(d.channel("mass_recall").mean(axis=(1, 2)))
    d = recs[2].selection[0].detail
    assert np.isnan(v.tier_hit_rate[:2]).all()
    assert v.tier_hit_rate[2] == pytest.approx(d.tier_hits.sum() / (d.tier_hits.sum() + d.tier_misses.sum()))
    # an unknown layer falls back to the sequence's first key; no key: the longest recent history
    assert hist.view((7, 5, 0)).key == (7, 1, 0)
    assert hist.view(None).key[0] == 8


def test_history_keeps_the_newest_steps_and_sequences():
    rng = np.random.default_rng(1)
    hist = SelectionHistory(capacity=2, max_seqs=2)
    hist.ingest(_step(1, [1, 2], [3, 3], rng))
    hist.ingest(_step(2, [2, 3], [3, 3], rng))
    hist.ingest(_step(3, [2, 3], [4, 4], rng))
    assert set(hist.sequences()) == {2, 3}                       # seq 1 was the oldest
    assert hist.view((2, 1, 0)).steps.tolist() == [2, 3]         # capacity: the newest two steps
    assert hist.view((2, 1, 0)) is hist.view((2, 1, 0))          # cached until the next step
    hist.ingest(StepRecord(step=4, t_start=0.0, t_end=0.0, phase="prefill", seq_ids=(5,)))
    assert hist.view((2, 1, 0)).series_steps.tolist() == [1, 2, 3]   # a step without records adds nothing


def test_a_recall_nobody_knows_stays_nan_in_the_series():
    rng = np.random.default_rng(2)
    rec = _step(1, [4, 5], [3, 3], rng)
    d = rec.selection[0].detail
    d.per_head[1, :, :, CHANNELS.index("mass_recall")] = np.nan       # layer 2: unknown
    d.per_head[0, 0, 0, CHANNELS.index("selection_recall")] = np.nan  # one unknown row is left out
    hist = SelectionHistory()
    hist.ingest(rec)
    v = hist.view(None)
    assert np.isnan(v.mass_recall[0, 1]) and not np.isnan(v.mass_recall[0, 0])
    want = np.nanmean(d.channel("selection_recall")[0])
    assert v.selection_recall[0, 0] == pytest.approx(want)
