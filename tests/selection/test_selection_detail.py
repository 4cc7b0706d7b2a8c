"""The columnar record of a step's selections (selection/detail.py): built from the
packed host copy with array slices, cropped to the step's longest context, with the
per-head tier counts, and summarised per layer without a loop over records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinyserve_core.kv.tiers import TierAccess
from tinyserve_core.selection.detail import CHANNELS, PLANES, SelectionDetail
from tinyserve_core.selection.stats import step_summary


def _packed(L=2, B=3, H=2, M=16, ctx=(5, 9, 3), cands=False, seed=0):
    rng = np.random.default_rng(seed)
    C = len(CHANNELS)
    out = np.zeros((L, B, H, C + PLANES * M), np.float32)
    planes = out[..., C:].reshape(L, B, H, PLANES, M)
    for b, n in enumerate(ctx):
        sel = rng.random((L, H, n)) < 0.5
        planes[:, b, :, 0, :n] = sel
        planes[:, b, :, 1, :n] = rng.random((L, H, n)) < 0.5
        planes[:, b, :, 2, :n] = rng.standard_normal((L, H, n))
        planes[:, b, :, 2, n:] = np.nan
        out[:, b, :, CHANNELS.index("pages_selected")] = sel.sum(-1)
        out[:, b, :, CHANNELS.index("context_pages")] = n
    planes[..., 3, :] = (rng.random((L, B, H, M)) < 0.5) if cands else np.nan
    out[..., CHANNELS.index("mass_recall")] = rng.random((L, B, H))
    out[..., CHANNELS.index("entropy")] = np.nan
    return out


def test_planes_are_cropped_to_the_longest_context_and_copied():
    packed = _packed()
    d = SelectionDetail.from_packed("quest", [1, 2], [10, 11, 12], packed)
    assert d.selected.shape == d.oracle.shape == d.scores.shape == (2, 3, 2, 9)
    assert d.candidates is None and d.tier_hits is None and d.num_records == 12
    C, M = len(CHANNELS), 16
    planes = packed[..., C:].reshape(2, 3, 2, PLANES, M)
    assert np.array_equal(d.selected, planes[..., 0, :9] > 0.5)
    assert np.array_equal(d.scores, planes[..., 2, :9], equal_nan=True)
    assert d.pages(1, 2, 0).tolist() == np.flatnonzero(planes[1, 2, 0, 0, :3]).tolist()
    packed[:] = 0                          # the pinned buffer is reused: the record keeps its copy
    assert d.selected.any() and d.layers.tolist() == [1, 2] and d.seq_ids.tolist() == [10, 11, 12]
    with_cands = SelectionDetail.from_packed("twostage", [0, 1], [1, 2, 3], _packed(cands=True))
    assert with_cands.candidates is not None and with_cands.candidates.shape == (2, 3, 2, 9)


def test_per_head_tier_hits_are_the_selected_pages_resident_before():
    packed = _packed()
    d0 = SelectionDetail.from_packed("quest", [1, 2], [10, 11, 12], packed)
    ctx = (5, 9, 3)
    tiers = [[TierAccess(0, 0, 0, 0, np.arange(n) % 2 == 0) for n in ctx] for _ in range(2)]
    d = SelectionDetail.from_packed("quest", [1, 2], [10, 11, 12], packed, tiers)
    for li in range(2):
        for b, n in enumerate(ctx):
            for h in range(2):
                pages = d0.pages(li, b, h)
                assert d.tier_hits[li, b, h] == int((pages % 2 == 0).sum())
                assert d.tier_misses[li, b, h] == len(pages) - d.tier_hits[li, b, h]


def test_the_summary_is_the_per_layer_mean_over_records():
    packed = _packed()
    d = SelectionDetail.from_packed("quest", [1, 2], [10, 11, 12], packed)
    s = step_summary(7, "quest", [1, 2], d.per_head, None, d)
    assert s.step == 7 and s.layers == (1, 2) and s.records == (6, 6) and s.detail is d
    for li in range(2):
        assert s.mass_recall[li] == pytest.approx(float(d.channel("mass_recall")[li].mean()))
        assert s.pages_selected[li] == pytest.approx(float(d.selected[li].sum()) / 6)
        assert math.isnan(s.entropy[li]) and s.tier_hits[li] == 0
    assert "detail" not in s.as_dict()
