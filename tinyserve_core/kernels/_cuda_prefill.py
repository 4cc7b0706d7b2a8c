"""Prefill attention on a CUDA device: one call of the FlashAttention-2 varlen kernel that
torch ships (`aten._flash_attention_forward` with cumulative sequence offsets), for every
sequence of the step at once, instead of a few kernels and an SDPA call per sequence (64
sequences x 6 layers were 384 SDPA calls and about 2,500 launches per prefill step).

FlashAttention takes grouped kv heads as they are, and its causal mask is aligned
bottom-right when a sequence has more keys than queries, which is exactly a cached
prefix's mask (query i at position nc+i sees keys 0..nc+i). A step with cached prefixes
gathers each sequence's keys and values from the paged cache in one index per layer (the
new tokens were written there just before). Shapes or dtypes the kernel does not take go
to the torch spec (prefill_reference.py)."""

from __future__ import annotations

import torch

from . import prefill_reference

_DTYPES = (torch.float16, torch.bfloat16)


def _supported(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    d = q.shape[-1]
    return q.dtype in _DTYPES and k_cache.dtype == q.dtype and d % 8 == 0 and d <= 256


def _context_index(block_tables, query_start, num_cached, block_size, device):
    """(cumulative key offsets [B+1] int32, the longest context, flat cache slot of every
    context token in sequence order [L] int64): built on the device from the block
    tables, sized from the host's lists, so nothing syncs."""
    ctx = [num_cached[b] + query_start[b + 1] - query_start[b] for b in range(len(num_cached))]
    total = sum(ctx)
    lens = torch.tensor(ctx, dtype=torch.int64).to(device, non_blocking=True)
    cu = torch.zeros(len(ctx) + 1, dtype=torch.int64, device=device)
    torch.cumsum(lens, 0, out=cu[1:])
    seq = torch.repeat_interleave(torch.arange(len(ctx), device=device), lens, output_size=total)
    pos = torch.arange(total, device=device) - cu[seq]
    page = block_tables[seq, pos // block_size].long()
    return cu.to(torch.int32), max(ctx), page * block_size + pos % block_size


def prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start: list[int],
                      num_cached: list[int], scale: float) -> torch.Tensor:
    if not _supported(q, k_cache):
        return prefill_reference.prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start,
                                                   num_cached, scale)
    cu_q = torch.tensor(query_start, dtype=torch.int32).to(q.device, non_blocking=True)
    max_q = max(query_start[b + 1] - query_start[b] for b in range(len(query_start) - 1))
    if any(num_cached):
        block_size = k_cache.shape[1]
        cu_k, max_k, slots = _context_index(block_tables, query_start, num_cached, block_size, q.device)
        k = k_cache.flatten(0, 1).index_select(0, slots)
        v = v_cache.flatten(0, 1).index_select(0, slots)
    else:
        cu_k, max_k = cu_q, max_q
    out = torch.ops.aten._flash_attention_forward(
        q.contiguous(), k.contiguous(), v.contiguous(), cu_q, cu_k, max_q, max_k, 0.0, True, False,
        scale=scale)[0]
    return out
