"""The spec of the one-op sparse decode (reference.sparse_decode_attention, top_pages):
which pages it keeps, in which order, and that keeping every page is dense attention.
CPU only."""

from __future__ import annotations

import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import reference


def _case(seq_lens, bs=16, hkv=2, hq=8, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pages = [-(-n // bs) for n in seq_lens]
    nb = sum(pages) + 2
    kc = torch.randn(nb, bs, hkv, d, generator=g)
    vc = torch.randn(nb, bs, hkv, d, generator=g)
    perm = torch.randperm(nb, generator=g).int()
    bt = torch.zeros(len(seq_lens), max(pages), dtype=torch.int32)
    at = 0
    for i, p in enumerate(pages):
        bt[i, :p] = perm[at:at + p]
        at += p
    meta = torch.stack([kc.amin(1), kc.amax(1)], dim=1)
    q = torch.randn(len(seq_lens), hq, d, generator=g)
    return q, kc, vc, meta, bt, torch.tensor(seq_lens, dtype=torch.int32)


def test_top_pages_keeps_the_best_bounds_ascending_with_forced_pages():
    scores = torch.tensor([[[5.0, 1.0, 9.0, 3.0, 7.0, 2.0, float("-inf")]]])
    lens = torch.tensor([6 * 4], dtype=torch.int32)  # 6 pages of 4 tokens; page 6 past the context
    assert reference.top_pages(scores, lens, 4, 3).tolist() == [[[0, 2, 4]]]
    # the sink page and the last page count against k
    assert reference.top_pages(scores, lens, 4, 3, sink_pages=1, force_last=True).tolist() == [[[0, 2, 5]]]
    assert reference.top_pages(scores, lens, 4, 3, sink_pages=2).tolist() == [[[0, 1, 2]]]
    # more than the context holds: -1 padding, never a page past the context
    assert reference.top_pages(scores, lens, 4, 9).tolist() == [[[0, 1, 2, 3, 4, 5, -1, -1, -1]]]


def test_top_pages_breaks_ties_toward_the_lower_page():
    scores = torch.tensor([[[2.0, 4.0, 4.0, 1.0, 4.0, 4.0]]])
    lens = torch.tensor([6 * 16], dtype=torch.int32)
    assert reference.top_pages(scores, lens, 16, 2).tolist() == [[[1, 2]]]
    assert reference.top_pages(scores, lens, 16, 3).tolist() == [[[1, 2, 4]]]


def test_sparse_decode_keeps_its_pages_and_all_pages_is_dense():
    q, kc, vc, meta, bt, sl = _case([300, 40, 129])
    scale = 64 ** -0.5
    out, pages, scores = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, 5, sink_pages=1,
                                                          force_last=True)
    assert torch.equal(scores, reference.page_scores(q, meta, bt, sl, scale, 16))
    assert torch.equal(pages, reference.top_pages(scores, sl, 16, 5, 1, True))
    assert (pages[:, :, 0] == 0).all()                       # the sink page
    assert (pages == 18).any(-1)[0].all()                    # 300 tokens: the last page is 18
    assert torch.allclose(out, reference.paged_decode_attention(q, kc, vc, bt, sl, scale, pages))
    everything, _, _ = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, bt.shape[1])
    assert torch.allclose(everything, reference.paged_decode_attention(q, kc, vc, bt, sl, scale), atol=1e-6)
