"""The fused sparse decode kernel (one launch: score, select, attend; sm_90 clusters) against
the three-kernel path and the torch reference, on random non-zero data. GPU only."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import reference

from .test_kernels_cuda import DEV, TOL, paged_context, poison_allocator, rand, ref_decode, rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture
def sparse(cuda_ops):
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the fused path needs sm_90 (thread-block clusters)")
    from tinyserve_core.kernels import _cuda_sparse

    return _cuda_sparse


def page_meta(kc):
    """Page min/max over the stored keys (NaN slots past a context do not count)."""
    k = kc.float()
    lo = k.nan_to_num(nan=float("inf")).amin(1)
    hi = k.nan_to_num(nan=float("-inf")).amax(1)
    return torch.stack([lo.clamp(min=-1e4), hi.clamp(max=1e4)], 1).to(kc.dtype)  # empty pages stay finite


def check_against_reference(q, kc, vc, meta, bt, sl, scale, k, out, pages):
    """Selection = the reference's top-k wherever scores are not tied at the threshold;
    output = the reference attention over the kernel's pages."""
    bs = kc.shape[1]
    ref_scores = reference.page_scores(q.float(), meta.float(), bt.clamp(min=0), sl, scale, bs)
    for b in range(q.shape[0]):
        n = math.ceil(int(sl[b]) / bs)
        for h in range(kc.shape[2]):
            got = pages[b, h]
            sel = got[got >= 0].long()
            assert sel.unique().numel() == sel.numel() == min(k, n)
            assert (got[min(k, n):] == -1).all()
            if k >= n:
                continue
            s = ref_scores[b, h, :n]
            kth = s.topk(k).values[-1]
            tol = 1e-4 * kth.abs() + 1e-5
            inside = torch.zeros(n, dtype=torch.bool, device=DEV)
            inside[sel] = True
            assert inside[s > kth + tol].all(), "a page clearly above the k-th score was left out"
            assert not inside[s < kth - tol].any(), "a page clearly below the k-th score was taken"
    ref = ref_decode(q, kc, vc, bt, sl, scale, pages)
    assert rel_err(out, ref) <= TOL[q.dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16, 32])
@pytest.mark.parametrize("hq,hkv", [(16, 4), (16, 2), (4, 4)])
def test_fused_matches_three_kernels_and_reference(sparse, gen, dtype, head_dim, bs, hq, hkv):
    seq_lens = [3000, 77, 40 * bs + 3, 1]
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, head_dim, dtype, gen)
    meta = page_meta(kc)
    q = rand((len(seq_lens), hq, head_dim), dtype, gen, scale=2.0)
    scale = head_dim ** -0.5
    for k in (24, 5):
        three_out, three_pages = sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, k, path="three")
        for cluster in (1, 2, 8, 16):
            poison_allocator()
            out, pages = sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, scale, k, path="fused",
                                                        cluster=cluster)
            # same scores bit for bit and the same tie rule: the very pages select_pages takes
            assert torch.equal(pages.sort(-1).values, three_pages.sort(-1).values), f"cluster {cluster}"
            valid = pages[..., 1:] >= 0  # the fused path lists a row's pages in ascending order
            assert (pages[..., 1:] > pages[..., :-1])[valid].all()
            check_against_reference(q, kc, vc, meta, bt, sl, scale, k, out, pages)
            assert rel_err(out, three_out) <= TOL[dtype] / 2


def test_fused_pages_come_in_page_order_and_pad_with_minus_one(sparse, gen):
    """k above a row's page count: every page, ascending, then -1; the output is dense
    attention for that row."""
    seq_lens = [100, 5000]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 8, 128, torch.float16, gen)
    meta = page_meta(kc)
    q = rand((2, 32, 128), torch.float16, gen)
    poison_allocator()
    out, pages = sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 10, path="fused")
    assert torch.equal(pages[0], torch.tensor([0, 1, 2, 3, 4, 5, 6, -1, -1, -1], dtype=torch.int32,
                                              device=DEV).expand(8, 10))
    row = pages[1]
    assert (row >= 0).all() and torch.equal(row, row.sort(-1).values)
    dense = ref_decode(q[:1], kc, vc, bt[:1], sl[:1], 128 ** -0.5)
    assert rel_err(out[:1], dense) <= TOL[torch.float16]


def test_fused_at_the_benchmark_shape(sparse, gen):
    """32K context, GQA 32/8, block 16, 2,048-token budget (128 pages of 2,048): the
    cluster plan the auto path picks at batch 1, checked like the small shapes."""
    seq_lens = [32768]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 8, 128, torch.float16, gen, spare_blocks=0)
    meta = page_meta(kc)
    q = rand((1, 32, 128), torch.float16, gen, scale=2.0)
    poison_allocator()
    out, pages = sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 128, path="fused")
    _, three = sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 128, path="three")
    assert torch.equal(pages.sort(-1).values, three.sort(-1).values)
    check_against_reference(q, kc, vc, meta, bt, sl, 128 ** -0.5, 128, out, pages)


def test_auto_path_follows_the_tuning_row(sparse, gen):
    """Batches up to sparse_fused_max_batch take the fused kernel, larger ones the three
    kernels; both give the same pages and output."""
    from tinyserve_core.kernels import _backend, tuning

    ext = _backend.build()
    seq_lens = [700, 1500, 33, 900, 2000]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 4, 128, torch.float16, gen)
    meta = page_meta(kc)
    q = rand((5, 16, 128), torch.float16, gen)
    try:
        ext.set_sparse_tuning(4, 8)
        assert sparse.plan(q[:4], kc, meta, bt[:4]) in (1, 2, 4, 8)
        assert sparse.plan(q, kc, meta, bt) == 0
        assert sparse.path_name(q, kc, meta, bt) == "3 kernels"
        auto_out, auto_pages = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 16)
        ext.set_sparse_tuning(8, 8)
        assert sparse.path_name(q, kc, meta, bt).startswith("fused (cluster ")
        fused_out, fused_pages = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 16)
    finally:
        tuning.apply(ext)
    assert torch.equal(auto_pages.sort(-1).values, fused_pages.sort(-1).values)
    assert rel_err(fused_out, auto_out) <= TOL[torch.float16] / 2


def test_fused_same_with_and_without_dependent_launch(sparse, gen):
    """Launched right behind another kernel with programmatic dependent launch, the fused
    kernel waits for its inputs: the same result as with serialised launches."""
    from tinyserve_core.kernels._backend import build

    ext = build()
    kc, vc, bt, sl = paged_context([3000, 1200], 16, 4, 128, torch.float16, gen)
    meta = page_meta(kc)
    q0 = rand((2, 16, 128), torch.float16, gen)
    runs = []
    try:
        for pdl in (True, False):
            ext.set_pdl(pdl)
            q = q0 * 1.0  # produced by the kernel just before
            runs.append(sparse.sparse_decode_attention(q, kc, vc, meta, bt, sl, 128 ** -0.5, 20, path="fused"))
    finally:
        ext.set_pdl(True)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
