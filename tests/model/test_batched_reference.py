"""The batched torch references the CPU serving path runs equal the one-at-a-time spec
(kernels/reference.py): paged decode attention against `_paged_decode_attention_loop`,
reshape_and_cache's page min/max against a per-page recomputation."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import reference as R


def per_page_spec(key, value, k_cache, v_cache, meta, slots):
    bs = k_cache.shape[1]
    valid = slots >= 0
    blocks, offs = slots[valid] // bs, slots[valid] % bs
    k_cache[blocks, offs] = key[valid].to(k_cache.dtype)
    v_cache[blocks, offs] = value[valid].to(v_cache.dtype)
    for b in torch.unique(blocks).tolist():
        keys = k_cache[b, : int(offs[blocks == b].max()) + 1].float()
        meta[b, 0], meta[b, 1] = keys.amin(0).to(meta.dtype), keys.amax(0).to(meta.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [1, 4, 16])
def test_reshape_and_cache_equals_per_page_spec(dtype, bs):
    g = torch.Generator().manual_seed(bs)
    kc, vc = (torch.randn(32, bs, 2, 8, generator=g).to(dtype) for _ in range(2))
    meta = torch.randn(32, 2, 2, 8, generator=g).to(dtype)  # stale bounds must be overwritten
    slots = torch.randperm(32 * bs, generator=g)[:20]
    slots[3] = -1
    key, val = torch.randn(20, 2, 8, generator=g), torch.randn(20, 2, 8, generator=g)
    ours = [t.clone() for t in (kc, vc, meta)]
    spec = [t.clone() for t in (kc, vc, meta)]
    R.reshape_and_cache(key, val, *ours, slots)
    per_page_spec(key, val, *spec, slots)
    for a, b in zip(ours, spec):
        assert torch.equal(a, b)


@pytest.mark.parametrize("trial", range(24))
def test_batched_decode_attention_equals_loop_spec(trial):
    g = torch.Generator().manual_seed(100 + trial)
    B, Hkv, G = 1 + trial % 5, 1 + trial % 3, 1 + (trial // 3) % 3
    D, bs, NB, M = 8, [1, 2, 4, 8][trial % 4], 64, 6
    dtype = torch.bfloat16 if trial % 5 == 0 else torch.float32
    kc, vc = (torch.randn(NB, bs, Hkv, D, generator=g).to(dtype) for _ in range(2))
    lens = torch.randint(1, bs * (M - 1), (B,), generator=g).int()
    tables = torch.stack([torch.randperm(NB, generator=g)[:M] for _ in range(B)]).int()
    tables[:, -1] = 10**6  # entries past the context are padding and may be garbage
    q = torch.randn(B, Hkv * G, D, generator=g).to(dtype)
    pages = None
    if trial % 2:
        pages = torch.randint(-1, M + 1, (B, Hkv, 3), generator=g).int()
        pages[0, 0] = -1  # a head with nothing selected outputs zeros
    ours = R.paged_decode_attention(q, kc, vc, tables, lens, 0.3, pages)
    spec = R._paged_decode_attention_loop(q, kc, vc, tables, lens, 0.3, pages)
    assert ours.dtype == dtype and ours.shape == q.shape
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert (ours.float() - spec.float()).abs().max() < tol
    if pages is not None:
        assert torch.count_nonzero(ours[0, :G]) == 0
