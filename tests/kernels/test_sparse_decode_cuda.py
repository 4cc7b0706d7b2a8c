"""The one-launch sparse decode (csrc/kernels/sparse_decode.cuh) against its spec on random
pools: the same page bounds as page_scores, the pages reference.top_pages picks from them,
attention over those pages as the reference computes it; and the same from the
three-launch path, across repeated calls (its counters), CUDA-graph replays and
programmatic dependent launch. Runs only with a GPU (`pytest -m cuda`)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import reference

from .test_kernels_cuda import DEV, TOL, paged_context, poison_allocator, rand, ref_decode, rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _setup(seq_lens, bs, hkv, hq, d, dtype, gen):
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, d, dtype, gen)
    meta = torch.stack([kc.nan_to_num().amin(1), kc.nan_to_num().amax(1)], dim=1)
    q = rand((len(seq_lens), hq, d), dtype, gen, scale=2.0)
    return q, kc, vc, meta, bt.clamp(min=0), sl


def _check(cuda_ops, q, kc, vc, meta, bt, sl, k, sink, last, dtype, **kw):
    scale = q.shape[-1] ** -0.5
    poison_allocator()
    out, pages, scores = cuda_ops.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, k, sink, last, **kw)
    assert torch.equal(scores, cuda_ops.page_scores(q, meta, bt, sl, scale, kc.shape[1]))
    assert torch.equal(pages, reference.top_pages(scores, sl, kc.shape[1], k, sink, last))
    assert rel_err(out, ref_decode(q, kc, vc, bt, sl, scale, pages)) <= TOL[dtype]
    return out, pages, scores


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16, 32])
@pytest.mark.parametrize("hq,hkv", [(32, 8), (16, 2), (4, 4)])
def test_one_launch_matches_the_spec(cuda_ops, gen, dtype, head_dim, bs, hq, hkv):
    seq_lens = [3000, 77, 1200, 5]  # a 5-token context has one page, fewer than k
    q, kc, vc, meta, bt, sl = _setup(seq_lens, bs, hkv, hq, head_dim, dtype, gen)
    _check(cuda_ops, q, kc, vc, meta, bt, sl, 24, 0, False, dtype, fused=True)
    _check(cuda_ops, q, kc, vc, meta, bt, sl, 24, 2, True, dtype, fused=True)


@pytest.mark.parametrize("splits", [1, 2, 5, 16])
def test_any_split_count_same_pages_and_output(cuda_ops, gen, splits):
    q, kc, vc, meta, bt, sl = _setup([2048, 600], 16, 8, 32, 128, torch.float16, gen)
    out, pages, _ = _check(cuda_ops, q, kc, vc, meta, bt, sl, 24, 1, True, torch.float16, fused=True,
                           num_splits=splits)
    chain, chain_pages, _ = cuda_ops.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 24, 1, True,
                                                             fused=False)
    assert torch.equal(pages, chain_pages)
    assert rel_err(out, chain) <= TOL[torch.float16] / 2


def test_ties_go_to_the_lower_page(cuda_ops, gen):
    """Pages with equal bounds, above every other page's: the lowest pages of the tie are
    kept, as select_pages and the spec keep them."""
    q, kc, vc, meta, bt, sl = _setup([1600], 16, 2, 8, 64, torch.float16, gen)
    for p in range(0, 100, 3):  # 34 pages tie
        meta[bt[0, p].long(), 0] = -100.0
        meta[bt[0, p].long(), 1] = 100.0
    _, pages, _ = _check(cuda_ops, q, kc, vc, meta, bt, sl, 10, 0, False, torch.float16, fused=True)
    assert pages[0].tolist() == [list(range(0, 30, 3))] * 2


def test_repeated_calls_and_graph_replays(cuda_ops, gen):
    """The launch leaves its counters at zero: calls in a row, and replays of a captured
    call with new queries, each equal a fresh eager call."""
    q, kc, vc, meta, bt, sl = _setup([4000, 900, 2500], 16, 8, 32, 128, torch.float16, gen)
    scale = 128 ** -0.5
    for _ in range(3):
        q.copy_(rand(q.shape, q.dtype, gen, scale=2.0))
        _check(cuda_ops, q, kc, vc, meta, bt, sl, 32, 0, True, torch.float16, fused=True)
    call = lambda: cuda_ops.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, 32, 0, True, fused=True)  # noqa: E731
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call()
    for _ in range(3):
        q.copy_(rand(q.shape, q.dtype, gen, scale=2.0))
        graph.replay()
        eager = call()
        for a, b in zip(captured, eager):
            assert torch.equal(a, b)


def test_same_with_and_without_dependent_launch(cuda_ops, gen):
    from tinyserve_core.kernels._backend import build

    ext = build()
    q, kc, vc, meta, bt, sl = _setup([3000, 77], 16, 4, 16, 128, torch.float16, gen)
    runs = []
    try:
        for pdl in (True, False):
            ext.set_pdl(pdl)
            runs.append([cuda_ops.sparse_decode_attention(q, kc, vc, meta, bt, sl, 0.1, 24, fused=True)
                         for _ in range(2)])
    finally:
        ext.set_pdl(True)
    for a, b in zip(runs[0][0], runs[1][1]):
        assert torch.equal(a, b)


def test_plan_refuses_what_one_launch_cannot_hold(cuda_ops):
    from tinyserve_core.kernels._backend import build

    ext = build()
    assert ext.sparse_decode_splits(1, 8, 2048, 128, 16, 128) > 1
    assert ext.sparse_decode_splits(1, 8, 5000, 128, 16, 128) == 0     # more pages than a CTA's keys
    assert ext.sparse_decode_splits(4096, 8, 2048, 128, 16, 128) == 0  # more rows than resident CTAs
    kc = torch.zeros(4, 16, 8, 128, device=DEV, dtype=torch.float16)
    q = torch.zeros(4096, 32, 128, device=DEV, dtype=torch.float16)
    bt = torch.zeros(4096, 4, device=DEV, dtype=torch.int32)
    sl = torch.full((4096,), 64, device=DEV, dtype=torch.int32)
    meta = torch.zeros(4, 2, 8, 128, device=DEV, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="does not fit one launch"):
        cuda_ops.sparse_decode_attention(q, kc, kc, meta, bt, sl, 0.1, 2, fused=True)
    # the automatic choice takes the three launches for it
    out, pages, _ = cuda_ops.sparse_decode_attention(q, kc, kc, meta, bt, sl, 0.1, 2)
    assert out.shape == q.shape and pages.shape == (4096, 8, 2)
