"""The ops API's `selection_stats` on the CPU (its torch spec, kernels/stats_reference.py):
the page bounds default to page_scores, the per-head inputs broadcast, and the planes keep
the layout the host reads (selection/detail.py)."""

from __future__ import annotations

import math

import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import reference, stats_reference as sr
from tinyserve_core.selection.detail import CHANNELS


def _case(lens, G=2, H=2, D=16, bs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pages = [math.ceil(L / bs) for L in lens]
    nb = sum(pages) + 1
    kc = torch.randn(nb, bs, H, D, generator=g)
    vc = torch.zeros_like(kc)
    meta = torch.zeros(nb, 2, H, D)
    bt = torch.zeros(len(lens), max(pages), dtype=torch.int32)
    perm, at = torch.randperm(nb, generator=g).to(torch.int32), 0
    for b, (L, n) in enumerate(zip(lens, pages)):
        bt[b, :n] = perm[at:at + n]
        at += n
        pos = torch.arange(L)
        reference.reshape_and_cache(torch.randn(L, H, D, generator=g), torch.zeros(L, H, D), kc, vc, meta,
                                    bt[b, pos // bs].long() * bs + pos % bs)
    return torch.randn(len(lens), H * G, D, generator=g), kc, meta, bt, torch.tensor(lens, dtype=torch.int32)


def test_the_spec_owns_the_channels_the_host_reads():
    assert sr.CHANNELS == CHANNELS and sr.C == len(CHANNELS) and sr.PLANES == 4


def test_scores_default_to_the_page_bounds_and_per_head_inputs_broadcast():
    q, kc, meta, bt, sl = _case([37, 8, 100])
    B, H, M = 3, 2, bt.shape[1]
    pi = torch.tensor([[[0, 2, -1, 4], [1, -1, -1, -1]]] * B, dtype=torch.int32)
    pi[1] = -1                                           # a row (1 page of context) with nothing selected
    entropy = torch.tensor([[0.5], [1.5], [2.5]])        # [B, 1]: broadcast over the kv-heads
    budget = torch.tensor([[3], [1], [7]])               # int64 [B, 1]
    got = kernels.selection_stats(q, kc, meta, bt, sl, 0.25, None, pi, None, entropy, budget)
    scores = reference.page_scores(q, meta, bt, sl, 0.25, 8)
    want = sr.selection_stats(q, kc, meta, bt, sl, 0.25, scores, pi, None, entropy, budget)
    assert torch.equal(got.nan_to_num(-7.0), want.nan_to_num(-7.0))
    ch = {c: got[..., i] for i, c in enumerate(CHANNELS)}
    assert ch["entropy"].tolist() == [[0.5, 0.5], [1.5, 1.5], [2.5, 2.5]]
    assert ch["budget_pages"].tolist() == [[3.0, 3.0], [1.0, 1.0], [7.0, 7.0]]
    assert ch["pages_selected"].tolist() == [[3.0, 1.0], [0.0, 0.0], [3.0, 1.0]]   # row 0: page 4 is past its 5
    assert ch["selection_recall"][1].tolist() == [1.0, 1.0]                         # k = 0
    C = sr.C
    assert torch.isnan(got[..., C + 3 * M:]).all()                                  # no candidate stage
    scores_plane = got[..., C + 2 * M:C + 3 * M]
    assert torch.isnan(scores_plane[1, :, 1:]).all() and not torch.isnan(scores_plane[1, :, :1]).any()


def test_dense_selects_the_whole_context_and_the_oracle_is_all_of_it():
    q, kc, meta, bt, sl = _case([50, 9])
    got = kernels.selection_stats(q, kc, meta, bt, sl, 0.25)
    M, C = bt.shape[1], sr.C
    n = torch.tensor([7, 2])
    assert got[..., 0].tolist() == [[7.0, 7.0], [2.0, 2.0]]
    assert torch.equal(got[..., C:C + M], got[..., C + M:C + 2 * M])               # oracle = selected
    assert torch.allclose(got[..., 2], torch.ones(2, 2)) and torch.allclose(got[..., 3], torch.ones(2, 2))
    assert (got[..., C:C + M].sum(-1) == n[:, None]).all()
