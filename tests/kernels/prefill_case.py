"""A random prefill step over a paged cache: sequences with and without cached prefixes,
partial pages, grouped kv heads; the cache holds every context token (the new ones
written as the model writes them before attention)."""

from __future__ import annotations

import torch


def prefill_case(new_lens, cached, *, hq=8, hkv=2, d=64, block_size=16, dtype=torch.float32,
                 device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = len(new_lens)
    ctx = [c + n for c, n in zip(cached, new_lens)]
    pages = [-(-L // block_size) for L in ctx]
    num_blocks = sum(pages) + 3
    perm = torch.randperm(num_blocks, generator=g)        # scattered, not in order
    tables = torch.zeros(B, max(pages), dtype=torch.int32)
    used = 0
    for b, p in enumerate(pages):
        tables[b, :p] = perm[used:used + p].to(torch.int32)
        used += p
    k_cache = torch.randn(num_blocks, block_size, hkv, d, generator=g) * 2  # garbage outside contexts
    v_cache = torch.randn(num_blocks, block_size, hkv, d, generator=g) * 2
    ctx_k = [torch.randn(L, hkv, d, generator=g) for L in ctx]
    ctx_v = [torch.randn(L, hkv, d, generator=g) for L in ctx]
    for b, L in enumerate(ctx):
        pos = torch.arange(L)
        blk = tables[b, pos // block_size].long()
        k_cache[blk, pos % block_size] = ctx_k[b]
        v_cache[blk, pos % block_size] = ctx_v[b]
    q = torch.randn(sum(new_lens), hq, d, generator=g)
    k = torch.cat([ctx_k[b][cached[b]:] for b in range(B)])
    v = torch.cat([ctx_v[b][cached[b]:] for b in range(B)])
    qs = [0]
    for n in new_lens:
        qs.append(qs[-1] + n)
    to = dict(device=device, dtype=dtype)
    return dict(q=q.to(**to), k=k.to(**to), v=v.to(**to), k_cache=k_cache.to(**to), v_cache=v_cache.to(**to),
                block_tables=tables.to(device), query_start=qs, num_cached=list(cached),
                scale=d ** -0.5), ctx_k, ctx_v


def dense_attention(case, ctx_k, ctx_v):
    """Each query against its own context with an explicit softmax, in float64."""
    q, qs, nc = case["q"].double().cpu(), case["query_start"], case["num_cached"]
    out = torch.empty_like(q)
    groups = q.shape[1] // ctx_k[0].shape[1]
    for b in range(len(nc)):
        for i in range(qs[b + 1] - qs[b]):
            n = nc[b] + i + 1                                       # keys 0..nc+i
            K = ctx_k[b][:n].double().repeat_interleave(groups, 1)  # [n, Hq, D]
            V = ctx_v[b][:n].double().repeat_interleave(groups, 1)
            s = torch.einsum("hd,nhd->hn", q[qs[b] + i], K) * case["scale"]
            out[qs[b] + i] = torch.einsum("hn,nhd->hd", s.softmax(-1), V)
    return out
