"""Random paged KV caches written through the reference ops, so page metadata is
exactly what the engine would hold. Block tables are shuffled: logical page order
never matches physical order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tinyserve_core.kernels import reference


def build_kv(seq_lens, num_kv_heads=2, head_dim=16, block_size=16, num_layers=1, seed=0,
             key_fn=None):
    """A KVCache-like namespace + block_tables [B, M] i32 + seq_lens [B] i32.
    `key_fn(layer, b, L, Hkv, D, gen) -> [L, Hkv, D]` shapes the keys (random by default)."""
    g = torch.Generator().manual_seed(seed)
    pages = [(L + block_size - 1) // block_size for L in seq_lens]
    M = max(pages)
    nb = sum(pages) + 3
    perm = torch.randperm(nb, generator=g)
    tables = torch.zeros(len(seq_lens), M, dtype=torch.int32)
    at = 0
    for b, n in enumerate(pages):
        tables[b, :n] = perm[at:at + n].to(torch.int32)
        at += n
    kv = SimpleNamespace(k_caches=[], v_caches=[], metas=[], block_size=block_size)
    for layer in range(num_layers):
        k_cache = torch.randn(nb, block_size, num_kv_heads, head_dim, generator=g)  # junk in unused slots
        v_cache = torch.randn(nb, block_size, num_kv_heads, head_dim, generator=g)
        meta = torch.zeros(nb, 2, num_kv_heads, head_dim)
        for b, L in enumerate(seq_lens):
            if key_fn is None:
                keys = torch.randn(L, num_kv_heads, head_dim, generator=g) * 1.5 + 0.3
            else:
                keys = key_fn(layer, b, L, num_kv_heads, head_dim, g)
            vals = torch.randn(L, num_kv_heads, head_dim, generator=g)
            pos = torch.arange(L)
            slots = tables[b, pos // block_size].long() * block_size + pos % block_size
            reference.reshape_and_cache(keys, vals, k_cache, v_cache, meta, slots)
        kv.k_caches.append(k_cache)
        kv.v_caches.append(v_cache)
        kv.metas.append(meta)
    return kv, tables, torch.tensor(seq_lens, dtype=torch.int32)


@pytest.fixture
def make_kv():
    return build_kv


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core box intra-op threads only spin
    (100x slower measured). One thread per test, restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
