"""Torch reference implementations of every TinyServe op: the executable spec.

The CUDA kernels in csrc/ implement the same signatures and must match these on
random inputs. Layouts (per layer):
  k_cache, v_cache : [num_blocks, block_size, num_kv_heads, head_dim]  (flash/NHD)
  meta             : [num_blocks, 2, num_kv_heads, head_dim]  meta[:,0]=min, meta[:,1]=max
                     of the keys stored in the page (same dtype as the cache: min/max
                     of representable values is exact, so the bound stays exact)
  block_tables     : [batch, max_blocks_per_seq] int32, physical block ids (pad: any)
  seq_lens         : [batch] int32, tokens in the context (including the new one)
  page_indices     : [batch, num_kv_heads, max_selected] int32 logical page numbers
                     (indices into the row of block_tables), -1 = padding
All math is done in float32 and cast back, as the kernels do.
"""

from __future__ import annotations

import torch

from .ranking import forced_pages


def reshape_and_cache(
    key: torch.Tensor,          # [T, Hkv, D]
    value: torch.Tensor,        # [T, Hkv, D]
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: torch.Tensor | None,
    slot_mapping: torch.Tensor,  # [T] int64, slot = block * block_size + offset, -1 skips
    one_per_page: bool = False,  # the caller's promise: no two tokens in one page (a decode step)
    runs: torch.Tensor | None = None,  # the caller's page runs (cache_runs.page_runs): a layout, not data
) -> None:
    """Write new tokens' K/V into their slots and refresh the pages' key min/max.

    After the call, for every page p that received a token, meta[p] holds the
    channel-wise min/max over the keys in slots 0..o of p, where o is the highest
    offset written in this call (pages fill in order, so that is exactly the
    page's content; a page that receives offset 0 starts afresh).

    The CUDA kernel gets the same bounds without reading pages back: from the new keys,
    merged with the page's old bounds when the call continues the page where the last
    one stopped; pages whose tokens arrive out of order it recomputes like this."""
    block_size = k_cache.shape[1]
    valid = slot_mapping >= 0
    if not bool(valid.any()):
        return
    slots = slot_mapping[valid].long()
    blocks = slots // block_size
    offsets = slots % block_size
    k_cache[blocks, offsets] = key[valid].to(k_cache.dtype)
    v_cache[blocks, offsets] = value[valid].to(v_cache.dtype)
    if meta is None:
        return
    touched, which = torch.unique(blocks, return_inverse=True)
    last = torch.full_like(touched, -1).scatter_reduce_(0, which, offsets, "amax")  # highest offset per page
    meta[touched] = slot_bounds(k_cache[touched].float(), last + 1).to(meta.dtype)


def slot_bounds(pages: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """[U, 2, Hkv, D]: the channel-wise min and max over slots 0..fill[u]-1 of each page of
    `pages` [U, block_size, Hkv, D] (a page with fill 0 gets zeros): the page key bounds."""
    inside = (torch.arange(pages.shape[1], device=pages.device)[None, :] < fill.to(pages.device)[:, None])
    inside = inside[:, :, None, None]
    lo = pages.masked_fill(~inside, float("inf")).amin(dim=1)
    hi = pages.masked_fill(~inside, float("-inf")).amax(dim=1)
    empty = (fill.to(pages.device) == 0)[:, None, None]
    return torch.stack([lo.masked_fill(empty, 0), hi.masked_fill(empty, 0)], dim=1)


def _gather_context(k_cache, v_cache, block_table_row, seq_len):
    block_size = k_cache.shape[1]
    n_pages = (seq_len + block_size - 1) // block_size
    ids = block_table_row[:n_pages].long()
    k = k_cache[ids].reshape(-1, *k_cache.shape[2:])[:seq_len]  # [L, Hkv, D]
    v = v_cache[ids].reshape(-1, *v_cache.shape[2:])[:seq_len]
    return k, v


def token_mask_from_pages(page_indices_row: torch.Tensor, seq_len: int, block_size: int):
    """[Hkv, L] bool: which context tokens each kv-head attends, given selected pages."""
    hkv = page_indices_row.shape[0]
    n_pages = (seq_len + block_size - 1) // block_size
    page_mask = torch.zeros(hkv, n_pages, dtype=torch.bool, device=page_indices_row.device)
    for h in range(hkv):
        sel = page_indices_row[h]
        sel = sel[(sel >= 0) & (sel < n_pages)].long()
        page_mask[h, sel] = True
    return page_mask.repeat_interleave(block_size, dim=1)[:, :seq_len]


def paged_decode_attention(
    query: torch.Tensor,         # [B, Hq, D]
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,      # [B] int32
    scale: float,
    page_indices: torch.Tensor | None = None,  # [B, Hkv, max_sel] int32, -1 pad
) -> torch.Tensor:
    """One query token per sequence attends over its paged context (GQA: query head
    h uses kv-head h // (Hq // Hkv)). With page_indices, each (sequence, kv-head)
    attends only over the tokens of its selected pages; a head with no selected token
    outputs zeros. Returns [B, Hq, D].

    Same results as `_paged_decode_attention_loop` (the one-sequence-at-a-time spec),
    computed for the whole batch at once: the contexts are gathered into one padded
    [B, T] tensor and positions past each sequence's length are masked."""
    B, Hq, D = query.shape
    num_blocks, block_size, Hkv, _ = k_cache.shape
    group = Hq // Hkv
    n_pages = (int(seq_lens.max()) + block_size - 1) // block_size
    T = n_pages * block_size
    # Table entries past a sequence's length are padding and may hold any value.
    ids = block_tables[:, :n_pages].long().clamp(0, num_blocks - 1).flatten()
    # Gather whole pages as rows of a 2-D view: a plain row copy, much faster on CPU
    # than indexing the 4-D cache.
    k = k_cache.view(num_blocks, -1).index_select(0, ids).view(B, T, Hkv, D).transpose(1, 2).float()
    v = v_cache.view(num_blocks, -1).index_select(0, ids).view(B, T, Hkv, D).transpose(1, 2).float()
    pos = torch.arange(T, device=query.device)
    mask = (pos[None, :] < seq_lens.to(pos.device).long()[:, None])[:, None, :]  # [B, 1, T]
    if page_indices is not None:
        sel = page_indices.long()
        sel = torch.where((sel >= 0) & (sel < n_pages), sel, n_pages)  # pads -> a dropped column
        page_mask = torch.zeros(B, Hkv, n_pages + 1, dtype=torch.bool, device=query.device)
        page_mask.scatter_(2, sel, True)
        mask = mask & page_mask[..., :n_pages].repeat_interleave(block_size, dim=2)
    # The group's query heads act as SDPA's query rows over their shared kv-head.
    out = torch.nn.functional.scaled_dot_product_attention(
        query.float().view(B, Hkv, group, D), k, v, attn_mask=mask[:, :, None, :], scale=scale)
    # A fully masked row (no selected token) must give zeros on every SDPA backend.
    return torch.nan_to_num(out, nan=0.0).reshape(B, Hq, D).to(query.dtype)


def _paged_decode_attention_loop(
    query: torch.Tensor,         # [B, Hq, D]
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,      # [B] int32
    scale: float,
    page_indices: torch.Tensor | None = None,  # [B, Hkv, max_sel] int32, -1 pad
) -> torch.Tensor:
    """The spec of paged_decode_attention, one sequence at a time: tests use it as the
    oracle for the batched reference and the CUDA kernel."""
    B, Hq, D = query.shape
    Hkv = k_cache.shape[2]
    group = Hq // Hkv
    block_size = k_cache.shape[1]
    out = torch.empty_like(query)
    for b in range(B):
        L = int(seq_lens[b])
        k, v = _gather_context(k_cache, v_cache, block_tables[b], L)
        k = k.float().repeat_interleave(group, dim=1)  # [L, Hq, D]
        v = v.float().repeat_interleave(group, dim=1)
        q = query[b].float()  # [Hq, D]
        logits = torch.einsum("hd,lhd->hl", q, k) * scale  # [Hq, L]
        if page_indices is not None:
            mask = token_mask_from_pages(page_indices[b], L, block_size)
            mask = mask.repeat_interleave(group, dim=0)
            logits = logits.masked_fill(~mask, float("-inf"))
        p = torch.softmax(logits, dim=-1)
        p = torch.nan_to_num(p, nan=0.0)  # a head with no selected token outputs zeros
        out[b] = torch.einsum("hl,lhd->hd", p, v).to(query.dtype)
    return out


def page_scores(
    query: torch.Tensor,         # [B, Hq, D]
    meta: torch.Tensor,          # [num_blocks, 2, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks]
    seq_lens: torch.Tensor,      # [B]
    scale: float,
    block_size: int,
) -> torch.Tensor:
    """Bounding-box upper bound of each page's attention logit (Quest):
    U[b, g, p] = scale * max_{h in group g} sum_i max(q_hi * min_pi, q_hi * max_pi)
    which is >= scale * q_h . k for every key k of page p and every head h of the
    group. Returns float32 [B, Hkv, max_blocks]; pages past the context are -inf."""
    B, Hq, D = query.shape
    Hkv = meta.shape[2]
    group = Hq // Hkv
    ids = block_tables.long().clamp(min=0)
    m = meta[ids].float()  # [B, P, 2, Hkv, D]
    q = query.float().view(B, Hkv, group, D).unsqueeze(1)  # [B, 1, Hkv, G, D]
    lo = m[:, :, 0].unsqueeze(3)  # [B, P, Hkv, 1, D]
    hi = m[:, :, 1].unsqueeze(3)
    u = torch.maximum(q * lo, q * hi).sum(-1).amax(-1) * scale  # [B, P, Hkv]
    scores = u.permute(0, 2, 1).contiguous()
    return mask_pages_past_context(scores, seq_lens, block_size)


def select_pages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-scoring logical pages of each (sequence, kv-head) row of page_scores'
    output: int32 [B, Hkv, k], -1 where the row has fewer than k finite scores (pages past
    the context score -inf). The order of pages within a row is unspecified."""
    m = scores.shape[-1]
    kk = min(int(k), m)
    vals, idx = scores.topk(kk, dim=-1)
    idx = idx.to(torch.int32).masked_fill_(vals == float("-inf"), -1)
    if kk < k:
        pad = idx.new_full((*idx.shape[:-1], int(k) - kk), -1)
        idx = torch.cat([idx, pad], dim=-1)
    return idx


def top_pages(scores, seq_lens, block_size: int, k: int, sink_pages: int = 0, force_last: bool = False):
    """The k pages of highest score in each (sequence, kv-head) row of page_scores' output,
    ties to the lower page, with the first `sink_pages` pages and, when `force_last`, the
    context's last page always among them (they count against k): int32 [B, Hkv, k] in
    ascending order, -1 padding (pages past the context are never taken)."""
    B, H, M = scores.shape
    forced = forced_pages((seq_lens.long() + block_size - 1) // block_size, M, sink_pages, bool(force_last))
    keys = scores.masked_fill(forced[:, None, :], float("inf"))
    kk = min(int(k), M)
    top = torch.sort(keys, dim=-1, descending=True, stable=True)
    idx = top.indices[..., :kk].masked_fill(top.values[..., :kk] == float("-inf"), M)
    idx = torch.sort(idx, dim=-1).values
    pages = torch.full((B, H, int(k)), -1, dtype=torch.int32, device=scores.device)
    pages[..., :kk] = idx.masked_fill(idx == M, -1).to(torch.int32)
    return pages


def sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale: float, k: int,
                            sink_pages: int = 0, force_last: bool = False):
    """Query-aware sparse decode (Quest) as one op: the page bounds (page_scores), the
    top_pages of them, and decode attention over those pages. Returns (out [B, Hq, D],
    page_indices int32 [B, Hkv, k], scores float32 [B, Hkv, M]: the bounds, before the
    forced pages)."""
    bs = k_cache.shape[1]
    scores = page_scores(query, meta, block_tables, seq_lens, scale, bs)
    pages = top_pages(scores, seq_lens, bs, k, sink_pages, force_last)
    out = paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale, pages)
    return out, pages, scores


def mask_pages_past_context(scores: torch.Tensor, seq_lens: torch.Tensor, block_size: int) -> torch.Tensor:
    """Set scores of pages beyond each sequence's context to -inf (in place)."""
    n_pages = (seq_lens.long() + block_size - 1) // block_size  # [B]
    p = torch.arange(scores.shape[-1], device=scores.device)
    scores.masked_fill_(p[None, None, :] >= n_pages[:, None, None], float("-inf"))
    return scores


def copy_blocks(
    k_caches: list[torch.Tensor],
    v_caches: list[torch.Tensor],
    metas: list[torch.Tensor] | None,
    block_mapping: torch.Tensor,  # [N, 2] int64 (src, dst)
) -> None:
    """Copy whole blocks src -> dst in every layer's K, V and metadata (copy-on-write)."""
    if block_mapping.numel() == 0:
        return
    src = block_mapping[:, 0].long()
    dst = block_mapping[:, 1].long()
    for i in range(len(k_caches)):
        k_caches[i][dst] = k_caches[i][src]
        v_caches[i][dst] = v_caches[i][src]
        if metas is not None:
            metas[i][dst] = metas[i][src]


def allocate_blocks(refcounts: torch.Tensor, num: int) -> torch.Tensor:
    """Batched allocation from a refcount array (the device-side allocator).

    Takes the `num` lowest-numbered blocks whose refcount is 0, sets their refcount
    to 1 and returns their ids (int32 [num]); entries past the free count are -1.
    Never returns a block twice."""
    free = torch.nonzero(refcounts == 0, as_tuple=False).flatten()
    take = free[:num]
    out = torch.full((num,), -1, dtype=torch.int32, device=refcounts.device)
    out[: take.numel()] = take.to(torch.int32)
    refcounts[take] = 1
    return out
