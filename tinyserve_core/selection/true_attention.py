"""True attention, per page, for one sequence: what the bounds estimate and what
h2o accumulates. Gathers the sequence's whole context, so it costs a dense attention
pass: statistics and the h2o baseline pay it, quest and adaptive never do."""

from __future__ import annotations

import torch


def context_keys(k_cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int) -> torch.Tensor:
    """float32 [L, Hkv, D]: the keys of one sequence's context in token order."""
    bs = k_cache.shape[1]
    n = (seq_len + bs - 1) // bs
    ids = block_table_row[:n].long()
    return k_cache[ids].reshape(-1, *k_cache.shape[2:])[:seq_len].float()


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
