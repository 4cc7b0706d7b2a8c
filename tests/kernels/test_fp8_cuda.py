"""The FP8 (e4m3) KV-cache kernels against their torch reference (kernels/fp8_reference.py)
on fresh random non-zero inputs. Runs only with a GPU (`pytest -m cuda`)."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import fp8_reference as f8

from .test_kernels_cuda import DEV, poison_allocator, rand, rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

NAN8 = 0x7F  # an e4m3fn NaN: a slot the kernel must never read


def fp8_context(seq_lens, bs, hkv, d, gen, spare_blocks=3):
    """An FP8 K/V pool holding `seq_lens` tokens per sequence in shuffled blocks, each
    (page, head) at its own power-of-two scale over four orders of magnitude. Slots past
    each context hold NaN codes; tables are padded with -1."""
    pages = [math.ceil(n / bs) for n in seq_lens]
    nb = sum(pages) + spare_blocks
    perm = torch.randperm(nb, device=DEV, generator=gen).to(torch.int32)
    sc = f8.pow2_scale(10.0 ** (torch.rand(nb, 2, hkv, device=DEV, generator=gen) * 4 - 2))
    x = (torch.randn(2, nb, bs, hkv, d, device=DEV, generator=gen) * 100).clamp(-448, 448)
    codes = [f8.quantize(x[j], 1.0) for j in range(2)]  # read back as code * the page's scale
    bt = torch.full((len(seq_lens), max(pages)), -1, dtype=torch.int32, device=DEV)
    at = 0
    for i, (n, p) in enumerate(zip(seq_lens, pages)):
        bt[i, :p] = perm[at:at + p]
        at += p
        for c in codes:
            c[bt[i, p - 1].long(), n - (p - 1) * bs:] = NAN8
    for c in codes:
        c[perm[at:].long()] = NAN8
    kc, vc = (c.view(f8.FP8) for c in codes)
    return kc, vc, sc, bt, torch.tensor(seq_lens, dtype=torch.int32, device=DEV)


def ref_decode(q, kc, vc, sc, bt, sl, scale, pi=None):
    """The reference in float32 with the NaN slots zeroed (it never uses them either)."""
    k, v = (f8.dequantize_cache(c, sc, j).nan_to_num() for j, c in enumerate((kc, vc)))
    from tinyserve_core.kernels import reference

    return reference.paged_decode_attention(q.float(), k, v, bt.clamp(min=0), sl, scale, pi)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16, 24, 64])  # 24: no power of two
@pytest.mark.parametrize("hq,hkv", [(4, 4), (16, 4), (16, 2)])
def test_fp8_decode_matches_reference(cuda_ops, gen, head_dim, bs, hq, hkv):
    seq_lens = [1, bs - 1, bs, bs + 1, 37, 700, 2 * bs + 5]
    kc, vc, sc, bt, sl = fp8_context(seq_lens, bs, hkv, head_dim, gen)
    q = rand((len(seq_lens), hq, head_dim), torch.float16, gen, scale=0.05)
    scale = head_dim ** -0.5
    ref = ref_decode(q, kc, vc, sc, bt, sl, scale)
    poison_allocator()
    api = kernels.paged_decode_attention(q, kc, vc, bt, sl, scale, kv_scales=sc)  # the cache dtype picks the path
    assert rel_err(api, ref) <= 2e-3
    from tinyserve_core.kernels import _cuda_fp8

    for splits in (0, 1, 5):  # the planner's choice, one CTA per sequence, forced merges
        poison_allocator()
        out = _cuda_fp8.paged_decode_attention(q, kc, vc, sc, bt, sl, scale, num_splits=splits)
        assert out.dtype == torch.float16 and out.shape == q.shape
        assert rel_err(out, ref) <= 2e-3, f"splits={splits}"


def test_fp8_decode_bf16_query_long_context(cuda_ops, gen):
    kc, vc, sc, bt, sl = fp8_context([32768, 5000, 17], 16, 8, 128, gen)
    q = rand((3, 32, 128), torch.bfloat16, gen, scale=0.05)
    ref = ref_decode(q, kc, vc, sc, bt, sl, 128 ** -0.5)
    poison_allocator()
    out = kernels.paged_decode_attention(q, kc, vc, bt, sl, 128 ** -0.5, kv_scales=sc)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) <= 1e-2


@pytest.mark.parametrize("bs", [8, 16, 24])
def test_fp8_sparse_subset_matches_reference(cuda_ops, gen, bs):
    from tinyserve_core.kernels import _cuda_fp8

    seq_lens = [3000, 700, 40, 5]
    hkv, hq, d = 2, 16, 128
    kc, vc, sc, bt, sl = fp8_context(seq_lens, bs, hkv, d, gen)
    q = rand((4, hq, d), torch.float16, gen, scale=0.05)
    sel = 6
    pi = torch.full((4, hkv, sel), -1, dtype=torch.int32, device=DEV)
    for b, n in enumerate(seq_lens):
        p = math.ceil(n / bs)
        for h in range(hkv):
            k = min(sel - (h % 2), p)
            pi[b, h, :k] = torch.randperm(p, device=DEV, generator=gen)[:k]
    pi[3, 0, :] = -1  # nothing selected: zeros
    ref = ref_decode(q, kc, vc, sc, bt, sl, d ** -0.5, pi)
    poison_allocator()
    out = _cuda_fp8.paged_decode_attention(q, kc, vc, sc, bt, sl, d ** -0.5, pi, num_splits=3)
    assert rel_err(out, ref) <= 2e-3
    assert out[3, : hq // hkv].abs().max().item() == 0.0


# ---------------------------------------------------------------------- reshape_and_cache
def _codes(shape, gen):
    """Random e4m3 codes of either sign, no NaN."""
    codes = torch.randint(0, 0x7F, shape, dtype=torch.uint8, device=DEV, generator=gen)
    return codes | torch.randint(0, 2, codes.shape, dtype=torch.uint8, device=DEV, generator=gen) << 7


def _pools(nb, bs, hkv, d, gen):
    """FP8 pools holding random codes, scales and page bounds (stale pages), and a copy:
    K codes, V codes, scales, bounds."""
    codes = _codes((2, nb, bs, hkv, d), gen)
    sc = f8.pow2_scale(torch.rand(nb, 2, hkv, device=DEV, generator=gen) * 50)
    ours = [codes[0].view(f8.FP8), codes[1].view(f8.FP8), sc, _codes((nb, 2, hkv, d), gen).view(f8.FP8)]
    return ours, [x.clone() for x in ours]


def _same(ours, refs):
    """Codes and scales bit for bit; the bounds by value (the min of +0 and -0 may be either)."""
    for a, b in zip(ours[:3], refs[:3]):
        a = a.view(torch.uint8) if a.dtype == f8.FP8 else a
        b = b.view(torch.uint8) if b.dtype == f8.FP8 else b
        assert torch.equal(a, b)
    assert torch.equal(ours[3].float(), refs[3].float())


def _write_both(ours, refs, sm, dtype, gen, magnitude, **layout):
    kc = ours[0]
    shape = (sm.numel(), *kc.shape[2:])
    mag = torch.tensor(magnitude, device=DEV)[torch.randint(0, len(magnitude), (sm.numel(), 1, 1), device=DEV,
                                                            generator=gen)]
    key = (torch.randn(shape, device=DEV, generator=gen) * mag).to(dtype)
    val = (torch.randn(shape, device=DEV, generator=gen) * mag).to(dtype)
    kernels.reshape_and_cache(key, val, ours[0], ours[1], ours[3], sm, kv_scales=ours[2], **layout)
    f8.reshape_and_cache(key, val, *refs[:3], sm, meta=refs[3])
    _same(ours, refs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bs", [8, 16, 64])
@pytest.mark.parametrize("hkv,d", [(1, 16), (2, 64), (8, 128)])   # (1, 16): 64 tokens side by side in a CTA
@pytest.mark.parametrize("layout", ["found", "given"])
def test_fp8_reshape_and_cache_matches_reference(cuda_ops, gen, dtype, bs, hkv, d, layout):
    """Bit-exact codes and scales and exact page bounds: a prefill in shuffled order with
    padding, pages spanning chunked calls, decode steps whose tokens outgrow their page's scale
    (re-quantising the earlier tokens and, in the one-launch kernel, the old bounds), partial
    pages, and pages reused from stale content (stale bounds too). layout "given": the
    caller passes its page runs (the prefill chunks, in order, without padding) or promises one
    token a page (the decode steps, padding kept), and the op writes in one launch."""
    from tinyserve_core.kernels.cache_runs import page_runs

    lens = [5 * bs + 3, bs, 7, 2 * bs, 333]
    pages = [math.ceil((n + bs + 2) / bs) for n in lens]
    nb = sum(pages) + 5
    perm = torch.randperm(nb, generator=gen, device=DEV).tolist()
    tables, at = [], 0
    for p in pages:
        tables.append(perm[at:at + p])
        at += p
    ours, refs = _pools(nb, bs, hkv, d, gen)

    def step(starts, ends, shuffle=False, magnitude=(1.0,), decode=False):
        slots = [row[t // bs] * bs + t % bs for s, n, row in zip(starts, ends, tables) for t in range(s, n)]
        sm = torch.tensor(slots, dtype=torch.int64, device=DEV)
        given = {}
        if layout == "given" and not decode:
            runs = page_runs(sm.cpu().numpy(), bs)
            assert runs is not None
            given = {"runs": torch.from_numpy(runs)}
        else:
            if shuffle:
                sm = sm[torch.randperm(len(slots), generator=gen, device=DEV)]
            sm = torch.cat([sm[:3], sm.new_tensor([-1]), sm[3:], sm.new_tensor([-1])])
            if layout == "given":
                given = {"one_per_page": True}
        _write_both(ours, refs, sm, dtype, gen, magnitude, **given)

    mid = [n // 2 + 1 for n in lens]
    step([0] * len(lens), mid, shuffle=True, magnitude=(0.01, 1.0))  # partial pages, any order
    step(mid, lens, magnitude=(3.0, 0.001))                          # pages spanning two calls
    for i in range(3):                                                # decode, outgrowing scales
        step([n + i for n in lens], [n + i + 1 for n in lens], magnitude=(30.0 * 10 ** i,), decode=True)


def test_fp8_reshape_and_cache_strided_views(cuda_ops, gen):
    hkv, d, bs, t = 2, 128, 16, 40
    qkv = rand((t, 4 + 2 * hkv, d), torch.float16, gen)
    key, val = qkv[:, 4:4 + hkv], qkv[:, 4 + hkv:]
    sm = torch.arange(t, device=DEV) + bs
    from tinyserve_core.kernels.cache_runs import page_runs

    for layout in ({}, {"runs": torch.from_numpy(page_runs(sm.cpu().numpy(), bs))}):
        ours, refs = _pools(4, bs, hkv, d, gen)
        for meta in (None, ours[3]):   # without page bounds too: an API caller's cache may keep none
            kernels.reshape_and_cache(key, val, ours[0], ours[1], meta, sm, kv_scales=ours[2], **layout)
            f8.reshape_and_cache(key, val, *refs[:3], sm, meta=None if meta is None else refs[3])
            _same(ours, refs)


# ---------------------------------------------------------------------- page bounds, sparse decode
def _bounds(kc, sc, sl, bt, bs):
    """The page bounds reshape_and_cache leaves: min/max codes over each page's filled slots."""
    codes = kc.float()
    nb = kc.shape[0]
    fill = torch.zeros(nb, dtype=torch.long, device=DEV)
    for b, n in enumerate(sl.tolist()):
        p = math.ceil(n / bs)
        fill[bt[b, :p].long()] = bs
        fill[bt[b, p - 1].long()] = n - (p - 1) * bs
    inside = (torch.arange(bs, device=DEV)[None, :] < fill[:, None])[:, :, None, None]
    lo = codes.nan_to_num(0).masked_fill(~inside, float("inf")).amin(1).nan_to_num(0, posinf=0)
    hi = codes.nan_to_num(0).masked_fill(~inside, -float("inf")).amax(1).nan_to_num(0, neginf=0)
    return torch.stack([lo, hi], dim=1).to(f8.FP8)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16])
@pytest.mark.parametrize("hq,hkv", [(8, 8), (16, 4), (32, 4)])
def test_fp8_page_scores_bound_the_dequantised_keys(cuda_ops, gen, head_dim, bs, hq, hkv):
    """The FP8 tensor-core scorer sits between the exact bound of the dequantised bounds (fp64)
    and that bound plus 1.3 times the margin (scale 2^-16 sum|q| M, M in values), is never
    below any dequantised key's logit, and ranks the pages as the reference does (near ties
    aside). A 150-page row spans several warps and CTAs, with a partial last tile."""
    seq_lens = [5 * bs + 3, bs, 1, 9 * bs, 150 * bs - 5]
    kc, vc, sc, bt, sl = fp8_context(seq_lens, bs, hkv, head_dim, gen)
    meta = _bounds(kc, sc, sl, bt, bs)
    q = rand((len(seq_lens), hq, head_dim), torch.float16, gen, scale=3.0)
    scale = head_dim ** -0.5
    poison_allocator()
    out = kernels.page_scores(q, meta, bt, sl, scale, bs, kv_scales=sc)
    ref = f8.page_scores(q.float(), meta, sc, bt, sl, scale, bs)
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(out)) and (out[~fin] == float("-inf")).all()
    g = hq // hkv
    live = bt >= 0
    ids = bt.clamp(min=0).long()
    m = f8.dequantize(meta[ids], sc[ids, 0][:, :, None, :, None]).double()   # [B, P, 2, Hkv, D]
    lo, hi = m[:, :, 0, :, None], m[:, :, 1, :, None]
    qq = q.double().view(len(seq_lens), 1, hkv, g, head_dim)
    exact = torch.maximum(qq * lo, qq * hi).sum(-1).amax(-1) * scale
    mag = torch.maximum(lo.abs(), hi.abs()).amax(-1).squeeze(-1)
    slack = qq.abs().sum(-1).amax(-1) * mag * scale * 2.0 ** -16
    u = out.double().permute(0, 2, 1)
    assert ((u >= exact) | ~live[..., None]).all(), (u - exact)[live].min()
    assert ((u - exact - 1.3 * slack)[live] <= 0).all()
    k = f8.dequantize_cache(kc, sc, 0).double()
    for b in range(len(seq_lens)):
        n = int(live[b].sum())
        keys = k[bt[b, :n].long()]
        true = torch.einsum("hgd,pthd->pthg", qq[b, 0], keys.nan_to_num(0.0))
        true = true.masked_fill(keys.isnan().any(-1)[..., None], -float("inf")).amax(dim=(1, 3)) * scale
        assert (u[b, :n] >= true).all(), b
    # the same top pages as the reference's fp32 bound wherever the k-th and (k+1)-th differ clearly
    top = out.topk(16, dim=-1).values[..., -2:]
    clear = ((top[..., 0] - top[..., 1]) > 1e-5 * top[..., 0].abs()) | (top[..., 1] == float("-inf"))
    ours, want = (kernels.select_pages(x, 15).sort(-1).values for x in (out, ref))
    assert torch.equal(ours[clear], want[clear]) and clear.float().mean() > 0.5


@pytest.mark.parametrize("batch", [1, 4, 33])
def test_fp8_sparse_decode_matches_reference(cuda_ops, gen, batch):
    """page_scores + select_pages + the FP8 decode kernel: the pages are the top pages of the
    kernel's own scores, the output the reference FP8 attention over those pages."""
    from tinyserve_core.kernels import reference

    bs, hkv, hq, d = 16, 2, 8, 128
    seq_lens = [(700 * (i + 3)) % 4000 + 1 for i in range(batch)]
    kc, vc, sc, bt, sl = fp8_context(seq_lens, bs, hkv, d, gen)
    meta = _bounds(kc, sc, sl, bt, bs)
    q = rand((batch, hq, d), torch.float16, gen, scale=0.3)
    out, pages, scores = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, d ** -0.5, 24, sink_pages=1,
                                                         force_last=True, kv_scales=sc)
    assert torch.equal(scores, kernels.page_scores(q, meta, bt, sl, d ** -0.5, bs, kv_scales=sc))
    def as_set(p):  # ascending, padding (-1) last
        return p.masked_fill(p < 0, 1 << 30).sort(-1).values

    assert torch.equal(as_set(pages), as_set(reference.top_pages(scores, sl, bs, 24, 1, True)))
    want = ref_decode(q, kc, vc, sc, bt, sl, d ** -0.5, pages)
    assert rel_err(out, want) <= 2e-3
