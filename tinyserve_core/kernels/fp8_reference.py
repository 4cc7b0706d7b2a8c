"""Torch reference (the spec) of the FP8 (e4m3) KV cache.

An FP8 cache keeps the layouts of reference.py (same block tables, same slots) with
  k_cache, v_cache : float8_e4m3fn [num_blocks, block_size, num_kv_heads, head_dim]
  kv_scales        : float32 [num_blocks, 2, num_kv_heads]  (page K scale, page V scale)
  meta (optional)  : float8_e4m3fn [num_blocks, 2, num_kv_heads, head_dim], the page key
                     bounds (channel-wise min, max) as codes under the page's K scale
A stored value is x / s rounded to e4m3 (nearest even); it reads back as q * s.

The page bounds that query-aware selection (Quest) reads are kept as codes too: the min
(max) over a page's tokens of q_t * s is s times the min (max) of their codes q_t, itself an
e4m3 code, so the bounds are exact at half the bytes of 16-bit bounds (1/16 of the page's
K/V, as with a 16-bit cache). When a page's scale grows its earlier codes are re-quantised by
old / new; rounding is monotone, so re-quantising the old min and max gives the min and max
of the re-quantised codes, and the bounds stay exact without reading the page back.

Granularity: one scale per (page, kv-head), for K and for V. Per page because pages are
the unit the cache allocates, shares and copies (the scale travels with its page); per
kv-head because heads differ in magnitude by an order of magnitude or more (a few key
heads carry outlier channels), and one scale per page would spend those heads' range on
the others. Finer (per channel) would cost head_dim scales per page and a multiply per
element; per (page, head) the attention kernel folds the K scale into each token's logit
and the V scale into each token's row, once per token.

Scales are powers of two: the smallest 2^e with amax <= 448 * 2^e (e >= -100). That costs
no precision (e4m3 keeps 3 mantissa bits at any exponent) and makes re-scaling exact: a
page that receives tokens over several calls (a prefill in chunks, then one token per
decode step) keeps one scale that only grows while it fills; when a call's tokens need a
larger scale, the page's earlier tokens are re-quantised by old / new, a power of two, which
changes no value except those falling into e4m3's subnormal range (below 2^-6 of the new
scale, i.e. under 1/28,000 of the page's largest value). A page whose offset 0 is written
starts afresh (it was just allocated or is being refilled). Neither a fixed first-write
scale (saturating later, larger tokens: a decode step writes one token per page) nor a
rescale by arbitrary ratios (each rescale rounds every earlier token again) stays correct.
"""

from __future__ import annotations

import torch

from . import reference, stats_reference

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_EXP = -100  # the scale of an all-zero page: any tiny power of two


def pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """float32: the smallest 2^e (e >= MIN_EXP) with amax <= 448 * 2^e. With amax = m 2^E,
    m in [0.5, 1) and 448 = 0.875 * 2^9: e = E - 9, or E - 8 when m > 0.875 (exact)."""
    m, e = torch.frexp(amax.float())
    e = e - 9 + (m > 0.875).to(e.dtype)
    e = torch.where(amax > 0, e, torch.full_like(e, MIN_EXP)).clamp(min=MIN_EXP)
    return torch.ldexp(torch.ones_like(amax, dtype=torch.float32), e.float())


def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """uint8 e4m3 codes of x / scale (scale broadcast; |x| <= 448 * scale)."""
    return (x.float() / scale).to(FP8).view(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 values of e4m3 codes (uint8 or float8 tensor) times their scale."""
    return codes.view(FP8).float() * scale


def dequantize_cache(cache: torch.Tensor, kv_scales: torch.Tensor, which: int) -> torch.Tensor:
    """float32 [NB, BS, Hkv, D] of a whole FP8 cache (which: 0 = K, 1 = V)."""
    return dequantize(cache, kv_scales[:, which, None, :, None])


def quantize_cache(cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 codes, float32 scales [NB, Hkv]) of a whole 16/32-bit cache [NB, BS, Hkv, D], one
    scale per (page, kv-head) from the page's largest value: what writing each page's tokens
    in order leaves (a page's scale is the one its largest token needs), but for values in
    e4m3's subnormal range under a scale that grew. For benchmarks that start from a
    prefilled 16-bit cache."""
    scale = pow2_scale(cache.abs().amax(dim=(1, 3)).float())
    return quantize(cache, scale[:, None, :, None]).view(FP8), scale


def reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping, one_per_page=False,
                      runs=None, meta=None) -> None:
    """Write new tokens' K/V (any float dtype) into an FP8 cache and update the scales, and
    the page key bounds `meta` when given (as reference.reshape_and_cache: channel-wise
    min/max over slots 0..o of each page the call writes, o its highest offset written, as
    codes under the page's K scale). (`one_per_page` and `runs` describe the call's layout
    for the CUDA op: no effect here.)

    For every page p the call writes, with `first` the lowest offset it writes there and
    amax the largest |value| of its new tokens per kv-head: the new scale is
    pow2_scale(amax), or at least the old scale when first > 0 (slots 0..first-1 hold the
    page's earlier tokens, pages fill in order); those earlier tokens are re-quantised to
    the new scale where it grew. Then the new tokens are quantised with the new scale.
    Padding slots (-1) are skipped."""
    block_size, hkv = k_cache.shape[1], k_cache.shape[2]
    valid = slot_mapping >= 0
    if not bool(valid.any()):
        return
    slots = slot_mapping[valid].long()
    blocks, offsets = slots // block_size, slots % block_size
    touched, which = torch.unique(blocks, return_inverse=True)
    first = torch.full_like(touched, block_size).scatter_reduce_(0, which, offsets, "amin")
    keep = (first > 0)[:, None]  # [U, 1]: the page continues, its earlier tokens stay
    below = torch.arange(block_size, device=slots.device)[None, :] < first[:, None]  # [U, BS]
    for j, (new, cache) in enumerate(((key, k_cache), (value, v_cache))):
        codes = cache.view(torch.uint8)
        x = new[valid].float()  # [N, Hkv, D]
        amax = torch.zeros(len(touched), hkv, device=x.device).scatter_reduce_(
            0, which[:, None].expand(-1, hkv), x.abs().amax(-1), "amax")
        old = kv_scales[touched, j]  # [U, Hkv]
        scale = torch.where(keep, torch.maximum(pow2_scale(amax), old), pow2_scale(amax))
        grew = keep & (scale != old)
        if bool(grew.any()):
            pages = codes[touched]  # [U, BS, Hkv, D]
            requant = quantize(dequantize(pages, (old / scale)[:, None, :, None]), 1.0)
            redo = below[:, :, None, None] & grew[:, None, :, None]
            codes[touched] = torch.where(redo, requant, pages)
        kv_scales[touched, j] = scale
        codes[blocks, offsets] = quantize(x, scale[which][..., None])
    if meta is not None:
        last = torch.full_like(touched, -1).scatter_reduce_(0, which, offsets, "amax")
        # over the codes' values: the min and max of codes are codes, so the cast is exact
        meta[touched] = reference.slot_bounds(k_cache[touched].float(), last + 1).to(FP8)


def dequantize_tables(k_cache, v_cache, kv_scales, block_tables, dtype=torch.float32):
    """(K, V, tables): the pages `block_tables` names, dequantised to `dtype` into a compact
    [U, BS, Hkv, D] pair, and the tables renumbered into it (same shape and dtype). Padding
    entries (negative) become some page of the pair that no reader looks at. Costs the
    tables' pages, not the pool's."""
    used, tables = _table_pages(block_tables)
    s = kv_scales[used]
    k = dequantize(k_cache[used], s[:, 0, None, :, None]).to(dtype)
    v = dequantize(v_cache[used], s[:, 1, None, :, None]).to(dtype)
    return k, v, tables


def _table_pages(block_tables):
    """(the distinct pages `block_tables` names, ascending; the tables renumbered into that
    list, same shape and dtype). Padding entries (negative) become some listed page."""
    used, inv = torch.unique(block_tables.long().clamp(min=0), return_inverse=True)
    return used, inv.view(block_tables.shape).to(block_tables.dtype)


def prefill_view(k, v, k_cache, v_cache, kv_scales, block_tables, query_start: list[int],
                 num_cached: list[int]):
    """(K, V, tables) in k's dtype for prefill_attention over an FP8 cache: the pages of the
    step's sequences dequantised (dequantize_tables) with the step's new tokens written back
    at full precision, since the CUDA prefill reads every context token from the cache while
    the spec attends the new tokens as computed. Without cached prefixes nothing is read
    from the cache: an empty page stands in for it."""
    bs, hkv, d = k_cache.shape[1:]
    if not any(num_cached):
        empty = k.new_zeros((1, bs, hkv, d))
        return empty, empty, torch.zeros_like(block_tables[:, :1])
    kp, vp, tables = dequantize_tables(k_cache, v_cache, kv_scales, block_tables, k.dtype)
    new = [query_start[b + 1] - query_start[b] for b in range(len(num_cached))]
    seq = torch.repeat_interleave(torch.arange(len(new)), torch.tensor(new))
    pos = torch.cat([torch.arange(nc, nc + n) for nc, n in zip(num_cached, new)])
    seq, pos = seq.to(k.device, non_blocking=True), pos.to(k.device, non_blocking=True)
    slots = tables[seq, pos // bs].long() * bs + pos % bs
    kp.view(-1, hkv, d)[slots] = k
    vp.view(-1, hkv, d)[slots] = v
    return kp, vp, tables


def dequantize_bounds(meta, kv_scales, block_tables):
    """(bounds, tables): the page key bounds of the pages `block_tables` names, float32
    [U, 2, Hkv, D] (codes times their page's K scale), and the tables renumbered into them."""
    used, tables = _table_pages(block_tables)
    return dequantize(meta[used], kv_scales[used, 0][:, None, :, None]), tables


def gathered_view(k_cache, meta, kv_scales, block_tables):
    """(keys, bounds, tables) in float32 for the spec of ops that read the cached keys
    themselves (selection statistics): every page of `block_tables` gathered and dequantised
    in table order, [B * M, BS, Hkv, D] and [B * M, 2, Hkv, D], and the tables renumbered into
    them. Static shapes (no unique), so a captured CUDA graph can hold it; it costs a float32
    copy of every page of the padded table, per call (a 19 GB peak at 64 sequences x 32K
    tokens, Hkv 8, head_dim 128, measured on an H200), which is why the CUDA statistics read
    the codes themselves."""
    B, M = block_tables.shape
    ids = block_tables.long().clamp(min=0).reshape(-1)
    s = kv_scales[ids, 0][:, None, :, None]
    keys = dequantize(k_cache[ids], s)
    bounds = dequantize(meta[ids], s)
    tables = torch.arange(B * M, device=block_tables.device, dtype=block_tables.dtype).view(B, M)
    return keys, bounds, tables


def selection_stats(query, k_cache, meta, kv_scales, block_tables, seq_lens, scale, scores, page_indices=None,
                    candidates=None, entropy=None, budget=None, rtol=1e-5) -> torch.Tensor:
    """stats_reference.selection_stats over the FP8 cache's dequantised keys and bounds (exact:
    power-of-two scales), the keys and bounds the FP8 attention and scores use."""
    keys, bounds, tables = gathered_view(k_cache, meta, kv_scales, block_tables)
    return stats_reference.selection_stats(query, keys, bounds, tables, seq_lens, scale, scores, page_indices,
                                           candidates, entropy, budget, rtol)


def page_scores(query, meta, kv_scales, block_tables, seq_lens, scale, block_size) -> torch.Tensor:
    """reference.page_scores over the FP8 cache's bounds (exact: the dequantised codes)."""
    bounds, tables = dequantize_bounds(meta, kv_scales, block_tables)
    return reference.page_scores(query, bounds, tables, seq_lens, scale, block_size)


def sparse_decode_attention(query, k_cache, v_cache, meta, kv_scales, block_tables, seq_lens, scale, k,
                            sink_pages=0, force_last=False):
    """reference.sparse_decode_attention over an FP8 cache: its page bounds, the top pages,
    the FP8 attention over them. Returns (out, page_indices, scores)."""
    bs = k_cache.shape[1]
    scores = page_scores(query, meta, kv_scales, block_tables, seq_lens, scale, bs)
    pages = reference.top_pages(scores, seq_lens, bs, k, sink_pages, force_last)
    out = paged_decode_attention(query, k_cache, v_cache, kv_scales, block_tables, seq_lens, scale, pages)
    return out, pages, scores


def paged_decode_attention(query, k_cache, v_cache, kv_scales, block_tables, seq_lens, scale,
                           page_indices=None) -> torch.Tensor:
    """reference.paged_decode_attention over the dequantised cache (float32 math), cast to
    the query's dtype."""
    k, v, tables = dequantize_tables(k_cache, v_cache, kv_scales, block_tables)
    out = reference.paged_decode_attention(query.float(), k, v, tables, seq_lens, scale, page_indices)
    return out.to(query.dtype)
