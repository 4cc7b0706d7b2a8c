"""Prefill attention, the torch spec: causal attention of each sequence's new tokens over
its cached prefix (read from the paged cache) and itself. Packed layout, as the serving
path runs it: sequence b owns rows query_start[b]:query_start[b+1] of q [N, Hq, D] and of
the new k, v [N, Hkv, D], which sit at positions num_cached[b]..; its first num_cached[b]
tokens are read from the cache through its block table (the new ones are in the cache too,
written before attention, but the spec takes them from k, v)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# Every backend but cuDNN: cuDNN builds a new execution graph for each new sequence length
# (milliseconds of host time per call), and prefill sees a new length almost every call.
# vLLM turns it off process-wide for the same reason; here it is scoped to our calls.
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(q, k, v, mask, causal: bool, scale: float) -> torch.Tensor:
    """SDPA over [B, H, T, D] (or [H, T, D]) with grouped kv heads. The kv heads are
    repeated rather than passed with enable_gqa: torch's CPU GQA path is several times
    slower, and on CUDA a GQA call that the flash kernel refuses falls back to the math
    kernel, which materialises [H, T, T] scores (8 GiB at 16K tokens). Inputs go in as
    4-D: the fused CUDA kernels want a batch dimension."""
    groups = q.shape[-3] // k.shape[-3]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    squeeze = q.dim() == 3
    if squeeze:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    with sdpa_kernel(SDPA_BACKENDS) if q.is_cuda else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    return out[0] if squeeze else out


def prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start: list[int],
                      num_cached: list[int], scale: float) -> torch.Tensor:
    """[N, Hq, D] outputs. A loop over sequences (never over tokens or heads): each has
    its own length and prefix."""
    out = torch.empty_like(q)
    block_size = k_cache.shape[1]
    for b in range(len(query_start) - 1):
        s, e = query_start[b], query_start[b + 1]
        nc = num_cached[b]
        qs, ks, vs = q[s:e], k[s:e], v[s:e]
        mask, causal = None, True
        if nc > 0:
            pages = block_tables[b, : (nc + block_size - 1) // block_size].long()
            kp = k_cache[pages].flatten(0, 1)[:nc].to(ks.dtype)
            vp = v_cache[pages].flatten(0, 1)[:nc].to(vs.dtype)
            ks, vs = torch.cat((kp, ks)), torch.cat((vp, vs))
            # Query i sits at position nc+i: it sees keys 0..nc+i (bottom-right causal).
            T, L = e - s, nc + e - s
            mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(diagonal=nc)
            causal = False
        o = sdpa(qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1), mask, causal, scale)
        out[s:e] = o.transpose(0, 1)
    return out
