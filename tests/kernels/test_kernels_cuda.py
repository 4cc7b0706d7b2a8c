"""Every CUDA kernel against its torch reference on fresh random inputs, outputs poisoned
with NaN first. Runs only with a GPU (`pytest -m cuda`)."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import cache_runs, reference

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DEV = "cuda"
BLOCK_SIZES = (8, 16, 32, 64, 128)
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "NaN in output (unwritten or poisoned element)"
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def poison_allocator(nbytes: int = 64 << 20) -> None:
    """Fill freed cached memory with NaN so a fresh torch.empty output that a kernel does
    not fully write shows NaN."""
    x = torch.full((nbytes // 4,), float("nan"), device=DEV)
    del x


def rand(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, device=DEV, generator=gen) * scale).to(dtype)


def paged_context(seq_lens, bs, hkv, d, dtype, gen, spare_blocks=3):
    """A K/V pool holding `seq_lens` tokens per sequence in shuffled blocks. Slots past each
    context hold NaN, so a kernel reading them fails. Tables are padded with -1."""
    pages = [math.ceil(n / bs) for n in seq_lens]
    nb = sum(pages) + spare_blocks
    perm = torch.randperm(nb, device=DEV, generator=gen).to(torch.int32)
    kc = rand((nb, bs, hkv, d), dtype, gen)
    vc = rand((nb, bs, hkv, d), dtype, gen)
    bt = torch.full((len(seq_lens), max(pages)), -1, dtype=torch.int32, device=DEV)
    at = 0
    for i, (n, p) in enumerate(zip(seq_lens, pages)):
        bt[i, :p] = perm[at:at + p]
        at += p
        tail = n % bs
        if tail:
            kc[bt[i, p - 1].long(), tail:] = float("nan")
            vc[bt[i, p - 1].long(), tail:] = float("nan")
    kc[perm[at:].long()] = float("nan")
    vc[perm[at:].long()] = float("nan")
    return kc, vc, bt, torch.tensor(seq_lens, dtype=torch.int32, device=DEV)


def ref_decode(q, kc, vc, bt, sl, scale, pi=None):
    """The reference on fp32 copies, NaN slots zeroed (the reference gathers whole pages and
    slices, so it never uses them either)."""
    return reference.paged_decode_attention(q.float(), kc.float().nan_to_num(), vc.float().nan_to_num(),
                                            bt.clamp(min=0), sl, scale, pi)


# ---------------------------------------------------------------- paged decode attention
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("hq,hkv", [(4, 4), (16, 4), (16, 2)])  # GQA ratios 1, 4, 8
def test_decode_matches_reference(cuda_ops, gen, dtype, head_dim, bs, hq, hkv):
    seq_lens = [1, bs - 1 or 1, bs, bs + 1, 37, 700, 2 * bs + 5]
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, head_dim, dtype, gen)
    q = rand((len(seq_lens), hq, head_dim), dtype, gen)
    scale = head_dim ** -0.5
    ref = ref_decode(q, kc, vc, bt, sl, scale)
    for splits in (0, 1, 5):  # the planner's choice, one CTA per sequence, forced merges
        poison_allocator()
        out = cuda_ops.paged_decode_attention(q, kc, vc, bt, sl, scale, num_splits=splits)
        assert out.dtype == dtype and out.shape == q.shape
        assert rel_err(out, ref) <= TOL[dtype], f"splits={splits}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_table_wider_than_the_contexts(cuda_ops, gen, dtype):
    """A CUDA graph captures the step at the model's widest table (8,192 pages for a 128K
    model) and the split plan follows that width: each sequence's own tokens are shared by
    the splits, whatever the width, and the merge takes any split count (300: more than
    its table of weights holds)."""
    seq_lens = [8192, 700, 100, 1]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 8, 128, dtype, gen)
    wide = torch.full((len(seq_lens), 8192), -1, dtype=torch.int32, device=DEV)
    wide[:, :bt.shape[1]] = bt
    q = rand((len(seq_lens), 32, 128), dtype, gen, scale=2.0)
    ref = ref_decode(q, kc, vc, bt, sl, 128 ** -0.5)
    assert cuda_ops.decode_num_splits(len(seq_lens), 8, wide.shape[1] * 16, 128) > 1
    for splits in (0, 33, 300):
        poison_allocator()
        out = cuda_ops.paged_decode_attention(q, kc, vc, wide, sl, 128 ** -0.5, num_splits=splits)
        assert rel_err(out, ref) <= TOL[dtype], f"splits={splits}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_long_context_split_k(cuda_ops, gen, dtype):
    seq_lens = [32768, 5000, 17]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 8, 128, dtype, gen)
    q = rand((3, 32, 128), dtype, gen, scale=2.0)  # peaked softmax: the merge must rescale
    ref = ref_decode(q, kc, vc, bt, sl, 128 ** -0.5)
    poison_allocator()
    out = kernels.paged_decode_attention(q, kc, vc, bt, sl, 128 ** -0.5)
    assert cuda_ops.decode_num_splits(3, 8, bt.shape[1] * 16) > 1
    assert rel_err(out, ref) <= TOL[dtype]


def test_sparse_path_same_with_and_without_dependent_launch(gen):
    """Scoring -> selection -> attention launched back to back with programmatic dependent
    launch gives exactly what serialised launches give (each kernel waits for its input)."""
    from tinyserve_core.kernels._backend import build
    ext = build()
    seq_lens = [3000, 77, 1200]
    kc, vc, bt, sl = paged_context(seq_lens, 16, 4, 128, torch.float16, gen)
    meta = torch.stack([kc.nan_to_num().amin(1), kc.nan_to_num().amax(1)], dim=1)
    q = rand((3, 16, 128), torch.float16, gen, scale=2.0)

    def path():
        sel = ext.select_pages(ext.page_scores(q, meta, bt, sl, 128 ** -0.5, 16), 24)
        return sel, ext.paged_decode_attention(q, kc, vc, bt, sl, 128 ** -0.5, sel, 0)
    try:
        runs = []
        for pdl in (True, False, True):
            ext.set_pdl(pdl)
            poison_allocator()
            runs.append(path())
    finally:
        ext.set_pdl(True)
    for sel, out in runs[1:]:
        assert torch.equal(sel, runs[0][0]) and torch.equal(out, runs[0][1])
    assert not torch.isnan(runs[0][1]).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bs", [8, 16, 64])
def test_sparse_with_all_pages_equals_dense(cuda_ops, gen, dtype, bs):
    seq_lens = [900, 333, 64]
    hkv, hq, d = 4, 16, 128
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, d, dtype, gen)
    q = rand((3, hq, d), dtype, gen)
    n_pages = bt.shape[1]
    pi = torch.full((3, hkv, n_pages + 3), -1, dtype=torch.int32, device=DEV)
    for b, n in enumerate(seq_lens):
        for h in range(hkv):
            pi[b, h, : math.ceil(n / bs)] = torch.randperm(math.ceil(n / bs), device=DEV, generator=gen)
    dense = cuda_ops.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5)
    poison_allocator()
    sparse = cuda_ops.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5, pi)
    assert rel_err(sparse, dense) <= TOL[dtype] / 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bs", [8, 16, 24, 128])  # 24: a block size that is no power of 2
def test_sparse_subset_matches_reference(cuda_ops, gen, dtype, bs):
    seq_lens = [3000, 700, 40, 5]
    hkv, hq, d = 2, 16, 64
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, d, dtype, gen)
    q = rand((4, hq, d), dtype, gen)
    sel = 6
    pi = torch.full((4, hkv, sel), -1, dtype=torch.int32, device=DEV)
    for b, n in enumerate(seq_lens):
        p = math.ceil(n / bs)
        for h in range(hkv):
            k = min(sel - (h % 2), p)  # ragged selections, -1 padded
            pi[b, h, :k] = torch.randperm(p, device=DEV, generator=gen)[:k]
    pi[3, 0, :] = -1  # a head with nothing selected outputs zeros, as the reference does
    ref = ref_decode(q, kc, vc, bt, sl, d ** -0.5, pi)
    poison_allocator()
    out = cuda_ops.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5, pi, num_splits=3)
    assert rel_err(out, ref) <= TOL[dtype]
    assert out[3, : hq // hkv].abs().max().item() == 0.0


# ---------------------------------------------------------------------- reshape_and_cache
def _fill_order_slots(lens, starts, tables, bs):
    """Slots for tokens starts[i]..lens[i]-1 of each sequence (pages fill in order)."""
    slots = []
    for n, s, row in zip(lens, starts, tables):
        slots += [row[t // bs] * bs + t % bs for t in range(s, n)]
    return slots


def _pools(lens, spare_tokens, spare_blocks, bs, hkv, d, dtype, gen):
    """Block tables with room for `spare_tokens` more tokens per sequence, NaN K/V/meta pools
    for the kernel and a copy for the reference."""
    pages = [math.ceil((n + spare_tokens) / bs) for n in lens]
    perm = torch.randperm(sum(pages) + spare_blocks, generator=gen, device=DEV).tolist()
    tables, at = [], 0
    for p in pages:
        tables.append(perm[at:at + p])
        at += p
    kc = torch.full((len(perm), bs, hkv, d), float("nan"), dtype=dtype, device=DEV)
    ours = [kc, kc.clone(), torch.full((len(perm), 2, hkv, d), float("nan"), dtype=dtype, device=DEV)]
    return tables, ours, [x.clone() for x in ours]


def _write_both(cuda_ops, ours, refs, sm, gen, one_per_page=False, runs=False):
    """Random K/V rows for slot mapping `sm` through the kernel and the reference: equal.
    `one_per_page`: no two tokens share a page (a decode step), the kernel's per-token path.
    `runs`: the call's page runs passed (cache_runs.page_runs), the kernel's runs path."""
    kc = ours[0]
    key = rand((sm.numel(), *kc.shape[2:]), kc.dtype, gen)
    val = rand((sm.numel(), *kc.shape[2:]), kc.dtype, gen)
    page_runs = None
    if runs:
        page_runs = cache_runs.page_runs(sm.cpu().numpy(), kc.shape[1])
        assert page_runs is not None
        page_runs = torch.from_numpy(page_runs).to(DEV)
    cuda_ops.reshape_and_cache(key, val, *ours, sm, one_per_page=one_per_page, runs=page_runs)
    reference.reshape_and_cache(key, val, *refs, sm)
    for a, b in zip(ours, refs):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("decode_path", [False, True])
def test_reshape_and_cache_prefill_then_decode(cuda_ops, gen, dtype, bs, decode_path):
    # lens: the decode steps write a page's first slot (bs, 2 * bs), its second (7 + 1), ...
    lens = [3 * bs + 5, bs, 7, 2 * bs]
    tables, ours, refs = _pools(lens, 2, 4, bs, 4, 64, dtype, gen)

    def step(starts, ends, one_per_page=False):
        slots = _fill_order_slots(ends, starts, tables, bs)
        order = torch.randperm(len(slots), generator=gen, device=DEV)  # any token order
        sm = torch.tensor(slots, dtype=torch.int64, device=DEV)[order]
        sm = torch.cat([sm, torch.tensor([-1, -1], device=DEV)])  # padding tokens are skipped
        _write_both(cuda_ops, ours, refs, sm, gen, one_per_page)

    step([0] * len(lens), lens)                      # prefill: many tokens per page
    step(lens, [n + 1 for n in lens], decode_path)   # decode: one token each
    step([n + 1 for n in lens], [n + 2 for n in lens], decode_path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bs", [8, 16, 64])
def test_reshape_and_cache_in_order_updates_bounds_exactly(cuda_ops, gen, dtype, bs):
    """Tokens in sequence order (the engine's layout; the kernel folds each page's run in
    registers and merges the old bounds): pages receiving their first token, partial pages,
    pages continued by the next call, runs crossing the kernel's token chunks (thousands of
    tokens), and a padding token inside a run. Meta starts as NaN, so a page merged with
    bounds it never had fails."""
    lens = [5000, 3 * bs + 3, 1, bs - 1, 2 * bs, 777]
    tables, ours, refs = _pools(lens, 2 * bs + 2, 3, bs, 2, 64, dtype, gen)

    def step(starts, ends, pad_at=None):
        sm = torch.tensor(_fill_order_slots(ends, starts, tables, bs), dtype=torch.int64, device=DEV)
        if pad_at is not None:
            sm = torch.cat([sm[:pad_at], sm.new_tensor([-1]), sm[pad_at:]])
        _write_both(cuda_ops, ours, refs, sm, gen)

    mid = [n // 2 + 1 for n in lens]
    step([0] * len(lens), mid, pad_at=7)                  # first chunk of a prefill: partial pages
    step(mid, lens)                                       # the rest: pages spanning two calls
    step(lens, [n + 1 for n in lens])                     # decode
    sm = torch.tensor(_fill_order_slots([n + 2 for n in lens], [n + 1 for n in lens], tables, bs),
                      dtype=torch.int64, device=DEV)
    _write_both(cuda_ops, ours, refs, sm, gen, one_per_page=True)   # decode, the per-token path
    step([n + 2 for n in lens], [n + bs + 2 for n in lens])  # a few tokens per sequence


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("bs,hkv,d", [(32, 2, 64), (128, 2, 64), (16, 6, 128), (64, 10, 128)])
def test_reshape_and_cache_whole_page_chunks_and_wide_rows(cuda_ops, gen, dtype, bs, hkv, d):
    """What the tests above do not reach (review r25; written when no GPU was left, to be
    run): calls long enough for chunks of a whole page (the persistent grid, chunk == BS:
    T >= BS x 2 CTAs per SM) at block sizes whose runs outgrow the warp's 32-token slot
    window, and rows of 96 16-byte vectors (fp16, 6 x 128: a column team of 96 leaves 64
    threads over its 2 row groups) or of 160 and 320 (10 x 128: column passes with idle
    lanes). In sequence order with a padding token, each page continued by a second call."""
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    half = bs * 2 * sms + 5                     # tokens per call: enough for chunk == bs
    lens = [half, half + bs // 2 + 3, 2 * half - bs // 2 + 1, bs - 1]
    tables, ours, refs = _pools(lens, 2, 3, bs, hkv, d, dtype, gen)

    def step(starts, ends, pad_at=None):
        sm = torch.tensor(_fill_order_slots(ends, starts, tables, bs), dtype=torch.int64, device=DEV)
        if pad_at is not None:
            sm = torch.cat([sm[:pad_at], sm.new_tensor([-1]), sm[pad_at:]])
        _write_both(cuda_ops, ours, refs, sm, gen)

    mid = [n // 2 + 1 for n in lens]                 # mid-page: the second call merges the bounds
    step([0] * len(lens), mid, pad_at=bs + 40)
    step(mid, lens)
    step(lens, [n + 1 for n in lens])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bs,hkv,d", [(8, 2, 64), (16, 8, 128), (64, 2, 64), (16, 6, 128), (32, 10, 128)])
def test_reshape_and_cache_with_the_callers_page_runs(cuda_ops, gen, dtype, bs, hkv, d):
    """The runs path (a prefill's page runs given): pages receiving their first token,
    partial pages, pages continued by the next call (bounds merged with the old ones), one
    token per page, long calls, wide rows (column teams of 96 and passes with idle lanes).
    Meta starts as NaN, so a page merged with bounds it never had fails."""
    lens = [1500, 3 * bs + 3, 1, bs - 1, 2 * bs, 777]
    tables, ours, refs = _pools(lens, 2 * bs + 2, 3, bs, hkv, d, dtype, gen)

    def step(starts, ends):
        sm = torch.tensor(_fill_order_slots(ends, starts, tables, bs), dtype=torch.int64, device=DEV)
        _write_both(cuda_ops, ours, refs, sm, gen, runs=True)

    mid = [n // 2 + 1 for n in lens]
    step([0] * len(lens), mid)                            # a prefill's first chunk: partial pages
    step(mid, lens)                                       # the rest: pages spanning two calls
    step(lens, [n + 1 for n in lens])                     # one token per sequence
    step([n + 1 for n in lens], [n + bs + 2 for n in lens])


def test_reshape_and_cache_strided_key_view(cuda_ops, gen):
    """key/value as views into a fused qkv projection (row stride != Hkv*D)."""
    hkv, d, bs, t = 2, 128, 16, 40
    qkv = rand((t, (4 + 2 * hkv), d), torch.float16, gen)
    key, val = qkv[:, 4:4 + hkv], qkv[:, 4 + hkv:]
    kc = torch.full((4, bs, hkv, d), float("nan"), dtype=torch.float16, device=DEV)
    vc, meta = kc.clone(), torch.full((4, 2, hkv, d), float("nan"), dtype=torch.float16, device=DEV)
    sm = torch.arange(t, device=DEV) + bs  # blocks 1.. in order
    r = [kc.clone(), vc.clone(), meta.clone()]
    kernels.reshape_and_cache(key, val, kc, vc, meta, sm)
    reference.reshape_and_cache(key, val, *r, sm)
    for a, b in zip([kc, vc, meta], r):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


# ----------------------------------------------------------------------------- page_scores
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16, 128])
@pytest.mark.parametrize("hq,hkv", [(8, 8), (16, 4), (16, 2), (32, 4)])
@pytest.mark.parametrize("mma", [True, False], ids=["mma", "fma"])
def test_page_scores_reference_and_exact_bound(cuda_ops, gen, dtype, head_dim, bs, hq, hkv, mma):
    """Both kernels (tensor cores for fp16/bf16, fp32 FMAs rounded up) sit between the exact
    bound, computed in fp64, and the exact bound plus 1.3 times the tensor-core kernel's margin,
    scale * 2^-16 * sum_i |q_i| * M (M: the page's largest |min_i|, |max_i|; the 0.3 covers
    its rounded-up adds, csrc/kernels/page_scores_mma.cuh). A 150-page row spans several
    warps and CTAs, with a partial last tile."""
    if dtype == torch.float32 and not mma:
        pytest.skip("float32 always takes the FMA kernel")
    from tinyserve_core.kernels._backend import build
    seq_lens = [5 * bs + 3, bs, 1, 9 * bs, 150 * bs - 5]
    kc, vc, bt, sl = paged_context(seq_lens, bs, hkv, head_dim, dtype, gen)
    if dtype == torch.float32:
        kc = kc.nan_to_num()
    # meta as reshape_and_cache leaves it: min/max of the stored keys (NaN past the context)
    meta = torch.stack([kc.float().nan_to_num(float("inf")).amin(1), kc.float().nan_to_num(-float("inf")).amax(1)],
                       dim=1).to(dtype)
    q = rand((len(seq_lens), hq, head_dim), dtype, gen, scale=3.0)
    scale = head_dim ** -0.5
    ref = reference.page_scores(q, meta, bt.clamp(min=0), sl, scale, bs)
    poison_allocator()
    was = build().set_score_mma(mma)
    try:
        out = kernels.page_scores(q, meta, bt, sl, scale, bs)
    finally:
        build().set_score_mma(was)
    assert out.shape == ref.shape and out.dtype == torch.float32
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(out)) and (out[~fin] == float("-inf")).all()
    # every live (sequence, page) at once, in fp64
    g = hq // hkv
    live = bt >= 0                                                     # [B, P]: pages in the context
    m = meta[bt.clamp(min=0).long()].double()                          # [B, P, 2, Hkv, D]
    lo, hi = m[:, :, 0, :, None], m[:, :, 1, :, None]                  # [B, P, Hkv, 1, D]
    qq = q.double().view(len(seq_lens), 1, hkv, g, head_dim)
    exact = torch.maximum(qq * lo, qq * hi).sum(-1).amax(-1) * scale  # [B, P, Hkv]
    mag = torch.maximum(lo.abs(), hi.abs()).amax(-1).squeeze(-1)       # M of each page row
    slack = qq.abs().sum(-1).amax(-1) * mag * scale * 2.0 ** -16
    u = out.double().permute(0, 2, 1)                                  # [B, P, Hkv]
    assert ((u >= exact) | ~live[..., None]).all(), (u - exact)[live].min()
    over = (u - exact - 1.3 * slack)[live]
    assert (over <= 0).all(), over.max()
    # the bound is never below the true max logit of any key in the page, exactly (fp64)
    for b in range(len(seq_lens)):
        n = int(live[b].sum())
        keys = kc[bt[b, :n].long()].double()                           # [P, bs, Hkv, D] (NaN: no key)
        true = torch.einsum("hgd,pthd->pthg", qq[b, 0], keys.nan_to_num(0.0))
        true = true.masked_fill(keys.isnan().any(-1)[..., None], -float("inf")).amax(dim=(1, 3)) * scale
        assert (u[b, :n] >= true).all(), b


@pytest.mark.parametrize("ppc", [16, 32, 128, 512])
@pytest.mark.parametrize("mma", [True, False], ids=["mma", "fma"])
def test_page_scores_any_cta_size_same_result(gen, ppc, mma):
    """Pages per CTA only splits the work: every size gives the automatic choice's scores (the
    tensor-core kernel rounds sizes up to 64 pages; the FMA kernel takes them as given)."""
    from tinyserve_core.kernels._backend import build
    seq_lens = [3000, 17, 1500]
    kc, vc, bt, sl = paged_context(seq_lens, 8, 2, 128, torch.float16, gen)
    meta = torch.stack([kc.nan_to_num().amin(1), kc.nan_to_num().amax(1)], dim=1)
    q = rand((3, 8, 128), torch.float16, gen)
    was = build().set_score_mma(mma)
    try:
        auto = build().page_scores(q, meta, bt, sl, 0.088, 8, 0)
        assert torch.equal(build().page_scores(q, meta, bt, sl, 0.088, 8, ppc), auto)
    finally:
        build().set_score_mma(was)
    assert torch.isfinite(auto[1, :, :3]).all() and (auto[1, :, 3:] == float("-inf")).all()


def test_page_scores_misaligned_query_takes_the_fma_kernel(gen):
    """A query view off 16-byte alignment cannot feed the tensor-core kernel's vector loads: it
    gets the FMA kernel's scores rather than a misaligned-address fault."""
    from tinyserve_core.kernels._backend import build
    kc, vc, bt, sl = paged_context([700, 90], 16, 2, 64, torch.float16, gen)
    meta = torch.stack([kc.nan_to_num().amin(1), kc.nan_to_num().amax(1)], dim=1)
    flat = rand((2 * 8 * 64 + 1,), torch.float16, gen)
    q = flat[1:].view(2, 8, 64)                                        # 2 bytes past an aligned start
    assert q.is_contiguous() and q.data_ptr() % 16
    was = build().set_score_mma(False)
    try:
        fma = build().page_scores(q.clone(), meta, bt, sl, 0.125, 16, 0)
    finally:
        build().set_score_mma(was)
    assert torch.equal(build().page_scores(q, meta, bt, sl, 0.125, 16, 0), fma)


# ----------------------------------------------------------------------------- copy_blocks
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_copy_blocks_all_layers_one_launch(cuda_ops, gen, dtype):
    layers, nb, bs, hkv, d = 3, 64, 16, 4, 128
    ks = [rand((nb, bs, hkv, d), dtype, gen) for _ in range(layers)]
    vs = [rand((nb, bs, hkv, d), dtype, gen) for _ in range(layers)]
    ms = [rand((nb, 2, hkv, d), dtype, gen) for _ in range(layers)]
    perm = torch.randperm(nb, generator=gen, device=DEV)
    src, dst = perm[:20], perm[20:40]
    for t in ks + vs + ms:
        t[dst] = float("nan")  # poisoned destinations must all be overwritten
    mapping = torch.stack([src, dst], 1)
    refs = [[t.clone() for t in group] for group in (ks, vs, ms)]
    kernels.copy_blocks(ks, vs, ms, mapping)
    reference.copy_blocks(*refs, mapping)
    for a, b in zip(ks + vs + ms, refs[0] + refs[1] + refs[2]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------- allocate_blocks
def test_allocate_blocks_contention_100k_requests(cuda_ops, gen):
    nb = 1 << 20
    rc = (torch.rand(nb, device=DEV, generator=gen) < 0.6).to(torch.int32) * torch.randint(
        1, 4, (nb,), device=DEV, generator=gen, dtype=torch.int32)
    ref_rc = rc.clone()
    ids = kernels.allocate_blocks(rc, 100_000)  # 100k requests in one launch
    ref = reference.allocate_blocks(ref_rc, 100_000)
    assert torch.equal(ids, ref)
    assert torch.equal(rc, ref_rc)
    assert ids.unique().numel() == ids.numel() and (ids >= 0).all()


def test_allocate_blocks_exhaustion(cuda_ops, gen):
    nb = 50_000
    rc = (torch.rand(nb, device=DEV, generator=gen) < 0.9).to(torch.int32)
    free = int((rc == 0).sum())
    ref_rc = rc.clone()
    ids = kernels.allocate_blocks(rc, free + 1234)
    ref = reference.allocate_blocks(ref_rc, free + 1234)
    assert torch.equal(ids, ref) and torch.equal(rc, ref_rc)
    assert (ids[free:] == -1).all() and (rc == 0).sum() == 0
    again = kernels.allocate_blocks(rc, 10)
    assert (again == -1).all()


def test_dispatch_picks_cuda_backend(cuda_ops):
    from tinyserve_core.kernels import _backend

    assert _backend.backend_for(torch.device("cuda")) is cuda_ops
    info = _backend.backend_info()
    assert info["backend"] == "cuda" and info["build_status"] == "built" and info["gpu"]


# ---------------------------------------------------------------------------- select_pages
@pytest.mark.parametrize("m,k", [(7, 3), (300, 128), (1024, 1024), (2000, 128), (2048, 128), (4096, 256), (50, 80), (5000, 64)])
def test_select_pages_matches_topk(cuda_ops, gen, m, k):
    b, h = 5, 4
    scores = torch.randn(b, h, m, device=DEV, generator=gen) * 10
    lens = torch.randint(1, m + 1, (b,), device=DEV, generator=gen)
    scores.masked_fill_(torch.arange(m, device=DEV)[None, None] >= lens[:, None, None], float("-inf"))
    scores[0, 0, : min(m, 9)] = 1.5  # ties at the threshold: lowest pages win, never twice
    poison_allocator()
    got = kernels.select_pages(scores, k)
    ref = reference.select_pages(scores, k)
    assert got.shape == (b, h, k) and got.dtype == torch.int32
    for r in range(b):
        for g in range(h):
            a, e = got[r, g], ref[r, g]
            assert (a == -1).sum() == (e == -1).sum()
            sa = a[a >= 0]
            assert sa.unique().numel() == sa.numel()
            # same multiset of selected scores (tie members may differ from torch's choice)
            assert torch.equal(scores[r, g, sa.long()].sort().values, scores[r, g, e[e >= 0].long()].sort().values)


def test_tuning_row_drives_the_launch_plans(cuda_ops):
    """set_tuning (the device's table row) changes the split and page_scores plans; the
    row in force is this GPU's (or the default)."""
    from tinyserve_core.kernels import _backend, tuning

    ext = _backend.build()
    assert tuning.applied()["device"] == torch.cuda.get_device_name(0)
    try:
        ext.set_tuning(8, 0.002, 1, 128, 8.0, 0, 8)  # max_splits 1: never split
        assert ext.decode_num_splits(1, 8, 32768, 128) == 1
        ext.set_tuning(2, 0.0, 256, 128, 8.0, 0, 8)
        assert ext.decode_num_splits(1, 8, 32768, 128) > 1
        ext.set_tuning(8, 0.002, 256, 512, 0.0, 0, 8)  # no CTA floor: the largest CTA
        assert ext.page_scores_ppc(1, 8, 2048) == 512
        ext.set_tuning(8, 0.002, 256, 512, 64.0, 0, 8)  # never enough CTAs: the smallest
        assert ext.page_scores_ppc(1, 8, 2048) == 16
    finally:
        tuning.apply(ext)


@pytest.mark.parametrize("dtype, D, group", [(torch.float16, 128, 4), (torch.bfloat16, 64, 8),
                                             (torch.float16, 64, 1)])
def test_decode_split_merge_in_the_launch_matches_the_merge_kernel(cuda_ops, dtype, D, group):
    """decode_merge_max_splits: each row's last CTA merges the splits (a counter per row, reset by
    that CTA) instead of a second kernel. Same result as the merge kernel and the reference
    on random data, at several split counts, one call after another (the counters must be
    back at zero for the next call to merge every row), inside a CUDA graph, and with more
    rows than counters (the merge kernel then)."""
    from tinyserve_core.kernels import _backend, tuning

    ext = _backend.build()
    g = torch.Generator(device="cuda").manual_seed(11)
    Hkv, BS, NB = 2, 16, 160
    Hq = Hkv * group
    B = 5
    q = torch.randn(B, Hq, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(NB, BS, Hkv, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(NB, BS, Hkv, D, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(NB, device="cuda", generator=g)[: B * 30].view(B, 30).to(torch.int32)
    lens = torch.tensor([480, 1, 100, 479, 257], device="cuda", dtype=torch.int32)
    ref = reference.paged_decode_attention(q.float(), k.float(), v.float(), tables, lens, D ** -0.5)
    row = {**tuning.applied()}
    outs = {}
    try:
        for fused in (0, 1):  # never / up to any split count
            ext.set_tuning(*tuning.args_of({**row, "decode_merge_max_splits": 4096 * fused}))
            outs[fused] = [ext.paged_decode_attention(q, k, v, tables, lens, D ** -0.5, None, s)
                           for s in (2, 3, 7, 30, 3)]
        for fused in (0, 1):
            for out in outs[fused]:
                assert (out.float() - ref).abs().max().item() < 2e-2
        for a, b in zip(outs[0], outs[1]):  # the merges sum in different orders
            assert (a.float() - b.float()).abs().max().item() < 1e-2
        assert torch.equal(outs[1][1], outs[1][4])  # the counters were at zero again
        # captured (the counters exist already) and replayed: every replay merges every row
        ext.set_tuning(*tuning.args_of({**row, "decode_merge_max_splits": 4096}))
        static = ext.paged_decode_attention(q, k, v, tables, lens, D ** -0.5, None, 7)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = ext.paged_decode_attention(q, k, v, tables, lens, D ** -0.5, None, 7)
        for _ in range(3):
            static.zero_()
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static, outs[1][2])
        # more rows than the counters serve: the merge kernel
        Bw = 4097 // Hkv + 1
        qw = torch.randn(Bw, Hq, D, device="cuda", dtype=dtype, generator=g)
        tw = tables[torch.arange(Bw, device="cuda") % B]
        lw = lens[torch.arange(Bw, device="cuda") % B]
        wide = ext.paged_decode_attention(qw, k, v, tw, lw, D ** -0.5, None, 3)
        refw = reference.paged_decode_attention(qw[:B].float(), k.float(), v.float(), tw[:B], lw[:B], D ** -0.5)
        assert (wide[:B].float() - refw).abs().max().item() < 2e-2
    finally:
        tuning.apply(ext)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_l2_prefetch_hint_changes_no_result(cuda_ops, dtype):
    """The tuning row's L2 prefetch hint only changes how K/V are fetched: the decode
    output (dense and selected pages, with splits) is bit-identical with and without it."""
    from tinyserve_core.kernels import _backend, tuning

    ext = _backend.build()
    g = torch.Generator(device="cuda").manual_seed(5)
    B, Hq, Hkv, D, BS, NB = 3, 8, 2, 128, 16, 64
    q = torch.randn(B, Hq, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(NB, BS, Hkv, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(NB, BS, Hkv, D, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(NB, device="cuda", generator=g)[: B * 20].view(B, 20).to(torch.int32)
    lens = torch.tensor([300, 17, 320], device="cuda", dtype=torch.int32)
    pages = torch.tensor([[0, 3, 5, -1], [0, -1, -1, -1], [1, 2, 19, 7]], device="cuda",
                         dtype=torch.int32)[:, None, :].expand(B, Hkv, 4).contiguous()
    outs = {}
    try:
        for hint in (0, 1):
            ext.set_tuning(8, 0.002, 256, 128, 8.0, hint, 8, 4)
            outs[hint] = [ext.paged_decode_attention(q, k, v, tables, lens, D ** -0.5, None, s) for s in (1, 4)]
            outs[hint].append(ext.paged_decode_attention(q, k, v, tables, lens, D ** -0.5, pages, 1))
    finally:
        tuning.apply(ext)
    ref = reference.paged_decode_attention(q.float(), k.float(), v.float(), tables, lens, D ** -0.5)
    assert (outs[0][0].float() - ref).abs().max().item() < 2e-2
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)
