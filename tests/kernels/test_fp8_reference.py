"""The FP8 (e4m3) KV cache's torch reference (kernels/fp8_reference.py) on the CPU: scales,
round-trip error bounds, scale updates over several calls, and the ops API's dispatch."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import fp8_reference as f8, reference

BS, HKV, D = 8, 2, 16


def pool(nb=6, bs=BS, hkv=HKV, d=D):
    k = torch.zeros(nb, bs, hkv, d, dtype=f8.FP8)
    return k, k.clone(), torch.zeros(nb, 2, hkv, dtype=torch.float32)


def write(key, value, kc, vc, sc, slots):
    kernels.reshape_and_cache(key, value, kc, vc, None, torch.tensor(slots), kv_scales=sc)


def bound(x, s):
    """e4m3's worst rounding of x at scale s: half a unit in the last place (3 mantissa
    bits: |x| / 16), or half the subnormal step (2^-10 s) near zero."""
    return torch.maximum(x.abs() / 16, s * 2.0 ** -10)


def test_pow2_scale_is_the_smallest_covering_power_of_two():
    amax = torch.tensor([448.0, 448.0001, 224.0, 224.0001, 1.0, 3e-3, 7e4, 0.0])
    s = f8.pow2_scale(amax)
    assert s.tolist()[:5] == [1.0, 2.0, 0.5, 1.0, 2.0 ** -8]
    assert s[-1].item() == 2.0 ** f8.MIN_EXP
    x = torch.rand(10_000) * 10.0 ** torch.randint(-6, 6, (10_000,)).float()
    s = f8.pow2_scale(x)
    assert torch.equal(torch.frexp(s)[0], torch.full_like(s, 0.5))  # powers of two
    assert (x <= 448 * s).all() and (x > 224 * s).all()


def test_round_trip_within_e4m3_rounding():
    kc, vc, sc = pool()
    key = torch.randn(3 * BS, HKV, D, dtype=torch.float16) * torch.tensor([0.05, 30.0]).view(1, 2, 1).half()
    val = torch.randn(3 * BS, HKV, D, dtype=torch.bfloat16)
    write(key, val, kc, vc, sc, list(range(BS, 4 * BS)))  # pages 1..3, one call
    for new, cache, j in ((key, kc, 0), (val, vc, 1)):
        back = f8.dequantize_cache(cache, sc, j)[1:4].reshape(-1, HKV, D)
        s = sc[1:4, j].repeat_interleave(BS, 0)[:, :, None]
        assert ((back - new.float()).abs() <= bound(new.float(), s)).all()
        # each (page, head) scale is its own: the heads' magnitudes differ 600x
        per_page = new.float().view(3, BS, HKV, D).abs().amax(dim=(1, 3))
        assert torch.equal(sc[1:4, j], f8.pow2_scale(per_page))
    assert (sc[[0, 4, 5]] == 0).all()  # untouched pages keep their scales


def test_scale_grows_and_earlier_tokens_are_requantised_exactly():
    kc, vc, sc = pool()
    small = torch.randn(3, HKV, D) * 0.5
    write(small, small, kc, vc, sc, [16, 17, 18])  # page 2, slots 0..2
    before = f8.dequantize_cache(kc, sc, 0)[2, :3].clone()
    s0 = sc[2, 0].clone()
    big = torch.randn(2, HKV, D) * 40
    write(big, big, kc, vc, sc, [19, 20])  # the same page continued, larger values
    s1 = sc[2, 0]
    assert (s1 > s0).all() and torch.equal(s1, f8.pow2_scale(torch.cat([small, big]).abs().amax(dim=(0, 2))))
    after = f8.dequantize_cache(kc, sc, 0)[2, :3]
    sub = before.abs() < 2.0 ** -6 * s1[None, :, None]  # e4m3 subnormal at the new scale
    assert torch.equal(after[~sub], before[~sub]) and not sub.all()
    assert ((after - before).abs() <= s1[None, :, None] * 2.0 ** -10).all()
    # a later, smaller token keeps the page's scale and leaves the earlier codes alone
    codes = kc.view(torch.uint8)[2, :5].clone()
    write(small[:1] * 0.01, small[:1], kc, vc, sc, [21])
    assert torch.equal(sc[2, 0], s1) and torch.equal(kc.view(torch.uint8)[2, :5], codes)


def test_decode_token_by_token_equals_the_page_amax_scale_and_bound():
    """A page filled one token per call (decode) ends with the scale of its amax, and every
    token within the rounding bound of that final scale (partial last page included)."""
    kc, vc, sc = pool()
    n = 2 * BS + 3
    keys = torch.randn(n, HKV, D) * torch.linspace(0.1, 20, n)[:, None, None]  # growing magnitudes
    table = [4, 1, 3]
    for t in range(n):
        write(keys[t:t + 1], -keys[t:t + 1], kc, vc, sc, [table[t // BS] * BS + t % BS])
    for p, blk in enumerate(table):
        x = keys[p * BS: (p + 1) * BS]
        s = f8.pow2_scale(x.abs().amax(dim=(0, 2)))
        assert torch.equal(sc[blk, 0], s) and torch.equal(sc[blk, 1], s)
        back = f8.dequantize_cache(kc, sc, 0)[blk, : len(x)]
        assert ((back - x).abs() <= bound(x, s[None, :, None]) + s[None, :, None] * 2.0 ** -10).all()


def test_chunked_prefill_any_order_and_padding_match_one_call():
    """Pages spanning two calls, shuffled token order and padding slots give what one
    in-order call gives, when the first chunk already holds each page's largest values."""
    n = 3 * BS + 5
    x = torch.randn(n, HKV, D)
    x[[0, BS, 2 * BS, 3 * BS]] *= 8  # each page's largest token comes first
    slots = [5 * BS + t if t < BS else BS + t for t in range(n)]  # pages 5, 2, 3, 4
    one = pool(nb=6)
    write(x, x, *one, slots)
    two = pool(nb=6)
    cut = BS + 3  # the second page spans the two calls
    order = torch.randperm(cut)
    write(x[:cut][order], x[:cut][order], *two, [slots[i] for i in order.tolist()])
    write(torch.cat([x[cut:], x[:1]]), torch.cat([x[cut:], x[:1]]), *two, slots[cut:] + [-1])
    for a, b in zip(one, two):
        assert torch.equal(a.view(torch.uint8) if a.dtype == f8.FP8 else a,
                           b.view(torch.uint8) if b.dtype == f8.FP8 else b)


def test_offset_zero_starts_a_page_afresh():
    kc, vc, sc = pool()
    write(torch.full((2, HKV, D), 300.0), torch.ones(2, HKV, D), kc, vc, sc, [8, 9])
    assert (sc[1, 0] == 1.0).all()
    write(torch.full((1, HKV, D), 0.25), torch.ones(1, HKV, D), kc, vc, sc, [8])  # page 1 reused
    assert (sc[1, 0] == 2.0 ** -10).all()  # 224 * 2^-10 < 0.25 <= 448 * 2^-10
    assert (f8.dequantize_cache(kc, sc, 0)[1, 0] == 0.25).all()


def test_fp8_attention_close_to_full_precision():
    torch.manual_seed(0)
    bs, hkv, hq, d = 16, 2, 8, 64
    lens = [700, 33, 1]
    pages = [math.ceil(n / bs) for n in lens]
    nb = sum(pages) + 2
    bt = torch.zeros(len(lens), max(pages), dtype=torch.int32)
    perm, at, slots = torch.randperm(nb).tolist(), 0, []
    for i, (n, p) in enumerate(zip(lens, pages)):
        bt[i, :p] = torch.tensor(perm[at:at + p])
        at += p
        slots += [int(bt[i, t // bs]) * bs + t % bs for t in range(n)]
    k, v = torch.randn(len(slots), hkv, d), torch.randn(len(slots), hkv, d)
    kf, vf = torch.zeros(nb, bs, hkv, d), torch.zeros(nb, bs, hkv, d)
    reference.reshape_and_cache(k, v, kf, vf, None, torch.tensor(slots))
    kc, vc, sc = pool(nb, bs, hkv, d)
    write(k, v, kc, vc, sc, slots)
    q = torch.randn(len(lens), hq, d) * 2
    sl = torch.tensor(lens, dtype=torch.int32)
    exact = reference.paged_decode_attention(q, kf, vf, bt, sl, d ** -0.5)
    out = kernels.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5, kv_scales=sc)
    assert out.dtype == q.dtype
    err = (out - exact).abs()
    # a convex combination of V rows, each within |v| / 16 (one e4m3 rounding), under
    # slightly perturbed weights; the one-token context is its V row, rounded once
    assert 0 < err.max() <= vf.abs().max() / 16 and err.mean() < 0.02
    torch.testing.assert_close(out[2], f8.dequantize_cache(vc, sc, 1)[int(bt[2, 0]), 0].repeat_interleave(hq // hkv, 0))
    # the selected-pages variant over the same cache
    pi = torch.tensor([[[0, 3, -1]] * hkv, [[1, -1, -1]] * hkv, [[0, -1, -1]] * hkv], dtype=torch.int32)
    sparse = kernels.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5, pi, kv_scales=sc)
    want = reference.paged_decode_attention(q, f8.dequantize_cache(kc, sc, 0), f8.dequantize_cache(vc, sc, 1),
                                            bt, sl, d ** -0.5, pi)
    torch.testing.assert_close(sparse, want)


def test_api_refuses_mismatched_arguments():
    kc, vc, sc = pool()
    x = torch.randn(1, HKV, D)
    with pytest.raises(ValueError, match="needs its kv_scales"):
        kernels.reshape_and_cache(x, x, kc, vc, None, torch.tensor([0]))
    with pytest.raises(ValueError, match="bounds of a float8_e4m3fn cache are float8_e4m3fn codes"):
        kernels.reshape_and_cache(x, x, kc, vc, torch.zeros(6, 2, HKV, D), torch.tensor([0]), kv_scales=sc)
    with pytest.raises(ValueError, match="no quantised key copy"):
        kernels.reshape_and_cache(x, x, kc, vc, None, torch.tensor([0]), torch.zeros(6, BS, HKV, D // 2,
                                                                                     dtype=torch.uint8),
                                  kv_scales=sc)
    with pytest.raises(ValueError, match="need the cache's kv_scales"):
        kernels.page_scores(torch.randn(1, 4, D), torch.zeros(6, 2, HKV, D, dtype=f8.FP8),
                            torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.int32), 0.25, BS)
    with pytest.raises(ValueError, match="reads the page key bounds"):
        kernels.sparse_decode_attention(torch.randn(1, 4, D), kc, vc, None, torch.zeros(1, 1, dtype=torch.int32),
                                        torch.ones(1, dtype=torch.int32), 0.25, 1, kv_scales=sc)
    with pytest.raises(ValueError, match="go with float8_e4m3fn page bounds"):
        kernels.page_scores(torch.randn(1, 4, D), torch.zeros(6, 2, HKV, D), torch.zeros(1, 1, dtype=torch.int32),
                            torch.ones(1, dtype=torch.int32), 0.25, BS, sc)
    with pytest.raises(ValueError, match="go with a float8_e4m3fn cache"):
        kernels.reshape_and_cache(x, x, kc.float(), vc.float(), None, torch.tensor([0]), kv_scales=sc)
    with pytest.raises(ValueError, match="needs its kv_scales"):
        kernels.paged_decode_attention(torch.randn(1, 4, D), kc, vc, torch.zeros(1, 1, dtype=torch.int32),
                                       torch.ones(1, dtype=torch.int32), 0.25)


def test_quantize_cache_is_what_writing_whole_pages_leaves():
    """A prefill of whole pages sets each page's scale from all its tokens at once, as
    quantize_cache does from the 16/32-bit cache holding the same tokens."""
    g = torch.Generator().manual_seed(5)
    nb, tokens = 6, 4 * BS
    key = torch.randn(tokens, HKV, D, generator=g) * torch.tensor([1.0, 30.0])[:, None]  # heads apart
    value = torch.randn(tokens, HKV, D, generator=g)
    slots = list(range(BS, BS + tokens))   # pages 1..4, whole
    kc, vc, sc = pool(nb)
    write(key, value, kc, vc, sc, slots)
    k16, v16 = torch.zeros(nb, BS, HKV, D), torch.zeros(nb, BS, HKV, D)
    reference.reshape_and_cache(key, value, k16, v16, None, torch.tensor(slots))
    for j, (cache, full) in enumerate(((kc, k16), (vc, v16))):
        codes, scale = f8.quantize_cache(full)
        assert codes.dtype == f8.FP8 and scale.shape == (nb, HKV)
        assert torch.equal(codes[1:5].view(torch.uint8), cache[1:5].view(torch.uint8))
        assert torch.equal(scale[1:5], sc[1:5, j])


def test_prefill_view_holds_cached_prefixes_dequantised_and_new_tokens_exact():
    """What prefill_attention reads over an FP8 cache (the CUDA prefill gathers every context
    token from it): each sequence's cached prefix as the cache holds it, its new tokens as
    computed; without cached prefixes, no page of the pool."""
    g = torch.Generator().manual_seed(9)
    kc, vc, sc = pool(10)
    tables = torch.tensor([[7, 2, 5], [3, 9, 0]], dtype=torch.int32)
    cached, new = [10, 3], [6, 4]
    for b, nc in enumerate(cached):   # the prefixes, written by an earlier step
        slots = [int(tables[b, p // BS]) * BS + p % BS for p in range(nc)]
        write(torch.randn(nc, HKV, D, generator=g), torch.randn(nc, HKV, D, generator=g), kc, vc, sc, slots)
    k, v = torch.randn(sum(new), HKV, D, generator=g), torch.randn(sum(new), HKV, D, generator=g)
    starts = [0, new[0], sum(new)]
    kp, vp, tp = f8.prefill_view(k, v, kc, vc, sc, tables, starts, cached)
    assert kp.dtype == k.dtype and tp.shape == tables.shape
    full = (f8.dequantize_cache(kc, sc, 0), f8.dequantize_cache(vc, sc, 1))
    for b, nc in enumerate(cached):
        for pos in range(nc + new[b]):
            page, off = pos // BS, pos % BS
            for view, cache, fresh in ((kp, full[0], k), (vp, full[1], v)):
                got = view[int(tp[b, page]), off]
                want = cache[int(tables[b, page]), off] if pos < nc else fresh[starts[b] + pos - nc]
                assert torch.equal(got, want), (b, pos)
    kp, vp, tp = f8.prefill_view(k, v, kc, vc, sc, tables, starts, [0, 0])
    assert kp.shape == (1, BS, HKV, D) and not kp.any() and tp.shape == (2, 1)


# ---- page bounds: codes under the page's K scale ------------------------------------------
def recomputed_bounds(kc, sc, fill):
    """float32 [NB, 2, Hkv, D]: min/max over slots 0..fill[p]-1 of each page's dequantised keys
    (pages with fill 0 left at 0)."""
    k = f8.dequantize_cache(kc, sc, 0)
    out = torch.zeros(k.shape[0], 2, *k.shape[2:])
    for p, n in enumerate(fill):
        if n:
            out[p, 0], out[p, 1] = k[p, :n].amin(0), k[p, :n].amax(0)
    return out


def test_page_bounds_stay_exact_through_chunks_growing_scales_and_reuse():
    """Over random calls (a prefill in shuffled order with padding, a page spanning two calls,
    decode tokens that outgrow the page's scale and re-quantise its earlier codes, a page
    refilled from offset 0), the bounds are codes whose values times the K scale are the
    min/max of the page's dequantised keys, exactly."""
    torch.manual_seed(3)
    nb = 6
    kc, vc, sc = pool(nb)
    meta = torch.zeros(nb, 2, HKV, D, dtype=f8.FP8)
    fill = [0] * nb

    def put(slots, mag):
        x = torch.randn(len(slots), HKV, D) * mag
        kernels.reshape_and_cache(x, -x, kc, vc, meta, torch.tensor(slots), kv_scales=sc)
        for page in {s // BS for s in slots if s >= 0}:   # a call writing offset 0 restarts the page
            offs = [s % BS for s in slots if s >= 0 and s // BS == page]
            fill[page] = max(offs) + 1 if 0 in offs else max(fill[page], max(offs) + 1)
        got = f8.dequantize(meta, sc[:, 0, None, :, None])
        want = recomputed_bounds(kc, sc, fill)
        live = torch.tensor([n > 0 for n in fill])
        assert torch.equal(got[live], want[live])

    first = [2 * BS + t for t in range(BS)] + [4 * BS + t for t in range(3)]
    order = torch.randperm(len(first)).tolist()
    put([first[i] for i in order] + [-1], 0.01)   # page 2 whole, page 4 partly, any order
    put([4 * BS + 3, 4 * BS + 4], 0.02)           # page 4 continues
    for t in range(5, 8):                         # one token a call, each outgrowing the scale
        put([4 * BS + t], 10.0 ** (t - 4))
    assert sc[4, 0].gt(2.0 ** -9).all()           # the scale grew: earlier codes re-quantised
    put([2 * BS], 1.0)                            # page 2 reused from offset 0: its bounds restart
    assert fill[2] == 1


def test_page_scores_over_fp8_bounds_bound_every_dequantised_key():
    torch.manual_seed(4)
    bs, hkv, hq, d, nb = 8, 2, 8, 16, 12
    kc, vc, sc = pool(nb, bs, hkv, d)
    meta = torch.zeros(nb, 2, hkv, d, dtype=f8.FP8)
    lens = [3 * bs + 2, bs, 5]
    tables = torch.tensor([[7, 1, 9, 4], [0, -1, -1, -1], [11, -1, -1, -1]], dtype=torch.int32)
    for b, n in enumerate(lens):
        slots = [int(tables[b, t // bs]) * bs + t % bs for t in range(n)]
        x = torch.randn(n, hkv, d) * torch.logspace(-2, 2, n)[:, None, None]
        kernels.reshape_and_cache(x, x, kc, vc, meta, torch.tensor(slots), kv_scales=sc)
    q = torch.randn(len(lens), hq, d)
    sl = torch.tensor(lens, dtype=torch.int32)
    u = kernels.page_scores(q, meta, tables, sl, 0.25, bs, kv_scales=sc)
    bounds = f8.dequantize(meta, sc[:, 0, None, :, None])
    assert torch.equal(u, reference.page_scores(q, bounds, tables.clamp(min=0), sl, 0.25, bs))
    k = f8.dequantize_cache(kc, sc, 0)
    for b, n in enumerate(lens):
        for t in range(n):
            logit = torch.einsum("hgd,hd->hg", q[b].view(hkv, hq // hkv, d), k[tables[b, t // bs], t % bs])
            assert (logit.amax(-1) * 0.25 <= u[b, :, t // bs] + 1e-5).all()
    assert torch.isinf(u[1, :, 1:]).all() and torch.isinf(u[2, :, 1:]).all()


def test_sparse_decode_and_statistics_over_an_fp8_cache():
    """sparse_decode_attention: the top pages of the FP8 bounds and the FP8 attention over
    them; selection_stats: the statistics of the dequantised cache and bounds."""
    from tinyserve_core.kernels import stats_reference

    torch.manual_seed(5)
    bs, hkv, hq, d, nb = 8, 2, 4, 16, 10
    kc, vc, sc = pool(nb, bs, hkv, d)
    meta = torch.zeros(nb, 2, hkv, d, dtype=f8.FP8)
    tables = torch.tensor([[3, 8, 1, 6], [2, 9, 0, -1]], dtype=torch.int32)
    lens = torch.tensor([4 * bs - 1, 2 * bs + 3], dtype=torch.int32)
    for b in range(2):
        n = int(lens[b])
        slots = [int(tables[b, t // bs]) * bs + t % bs for t in range(n)]
        x = torch.randn(n, hkv, d)
        kernels.reshape_and_cache(x, torch.randn(n, hkv, d), kc, vc, meta, torch.tensor(slots), kv_scales=sc)
    q = torch.randn(2, hq, d)
    out, pages, scores = kernels.sparse_decode_attention(q, kc, vc, meta, tables, lens, 0.25, 2, sink_pages=1,
                                                         force_last=True, kv_scales=sc)
    assert torch.equal(scores, kernels.page_scores(q, meta, tables, lens, 0.25, bs, kv_scales=sc))
    assert torch.equal(pages, reference.top_pages(scores, lens, bs, 2, 1, True))
    assert (pages[..., 0] == 0).all() and (pages[0, :, 1] == 3).all() and (pages[1, :, 1] == 2).all()
    torch.testing.assert_close(out, f8.paged_decode_attention(q, kc, vc, sc, tables, lens, 0.25, pages))
    got = kernels.selection_stats(q, kc, meta, tables, lens, 0.25, scores, pages, kv_scales=sc)
    k = f8.dequantize_cache(kc, sc, 0)
    want = stats_reference.selection_stats(q, k, f8.dequantize(meta, sc[:, 0, None, :, None]), tables.clamp(min=0),
                                           lens, 0.25, scores, pages)
    torch.testing.assert_close(got, want, equal_nan=True)
