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


def reshape_and_cache(
    key: torch.Tensor,          # [T, Hkv, D]
    value: torch.Tensor,        # [T, Hkv, D]
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: torch.Tensor | None,
    slot_mapping: torch.Tensor,  # [T] int64, slot = block * block_size + offset, -1 skips
) -> None:
    """Write new tokens' K/V into their slots and refresh the pages' key min/max.

    After the call, for every page p that received a token, meta[p] holds the
    channel-wise min/max over the keys in slots 0..o of p, where o is the highest
    offset written in this call (pages fill in order, so that is exactly the
    page's content; a page that receives offset 0 starts afresh)."""
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
    touched = torch.unique(blocks)
    for b in touched.tolist():
        last = int(offsets[blocks == b].max())
        keys = k_cache[b, : last + 1].float()  # [o+1, Hkv, D]
        meta[b, 0] = keys.amin(dim=0).to(meta.dtype)
        meta[b, 1] = keys.amax(dim=0).to(meta.dtype)


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
    attends only over the tokens of its selected pages. Returns [B, Hq, D]."""
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
