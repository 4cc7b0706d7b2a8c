"""True attention, per page: what the bounds estimate, what h2o accumulates and what
the oracle ranks by. Gathers the whole context, so it costs a dense attention pass:
statistics, h2o and the oracle pay it, quest and adaptive never do. The per-sequence
helpers serve tests and tools; the policies use `batched_page_mass`."""

from __future__ import annotations

import torch

from ..kernels.fp8_reference import dequantize
from ..kernels.stats_reference import paged_logits


def context_keys(k_cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int,
                 kv_scales: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [L, Hkv, D]: the keys of one sequence's context in token order (of an FP8
    cache with its `kv_scales`: dequantised)."""
    bs = k_cache.shape[1]
    n = (seq_len + bs - 1) // bs
    ids = block_table_row[:n].long()
    keys = k_cache[ids].float() if kv_scales is None else dequantize(k_cache[ids], kv_scales[ids, 0][:, None, :, None])
    return keys.reshape(-1, *k_cache.shape[2:])[:seq_len]


def attention_logits(query_row: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 [Hq, L]: scale * q_h . k_t with query head h reading kv-head h // group."""
    hq, hkv = query_row.shape[0], keys.shape[1]
    k = keys.repeat_interleave(hq // hkv, dim=1)  # [L, Hq, D]
    return torch.einsum("hd,lhd->hl", query_row.float(), k) * scale


def page_mass(logits: torch.Tensor, block_size: int, page_mask: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [Hq, n_pages]: softmax attention mass per page. With `page_mask`
    ([Hq, n_pages] bool) attention runs over the masked-in pages only, as sparse
    attention does."""
    hq, L = logits.shape
    n = (L + block_size - 1) // block_size
    if page_mask is not None:
        tok = page_mask.repeat_interleave(block_size, dim=1)[:, :L]
        logits = logits.masked_fill(~tok, float("-inf"))
    p = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)
    pad = n * block_size - L
    if pad:
        p = torch.nn.functional.pad(p, (0, pad))
    return p.view(hq, n, block_size).sum(-1)


def batched_page_mass(ctx, live: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [B, Hkv, M]: the attention mass each query of the batch puts on each page
    of its context (query heads of a group summed). With `live` (bool [B, Hkv, M])
    attention runs over those pages only, as sparse attention does."""
    # scale * q . k against every slot of the table's full width, -inf past each context:
    # static shapes, no host sync (CUDA-graph safe); the statistics op's spec owns the math
    logits = paged_logits(ctx.query, ctx.k_cache, ctx.block_tables, ctx.seq_lens, ctx.scale, ctx.kv_scales)
    B, H, G, T = logits.shape
    bs = ctx.block_size
    M = T // bs
    if live is not None:
        dead = ~live[..., None].expand(B, H, M, bs).reshape(B, H, 1, T)
        logits = logits.masked_fill(dead, float("-inf"))
    prob = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)
    return prob.view(B, H, G, M, bs).sum(-1).sum(2)
