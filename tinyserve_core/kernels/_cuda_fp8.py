"""The CUDA backend of the FP8 (e4m3) cache ops (fp8_reference.py is their spec): input
normalisation over the compiled extension's `reshape_and_cache_fp8` and the FP8 path of
`paged_decode_attention`. Shapes the kernels do not cover go to the reference, said once."""

from __future__ import annotations

import torch

from . import fp8_reference
from ._cuda_ops import _aligned_rows, _extension, _i32, _note_once


def reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping, one_per_page=False,
                      runs=None) -> None:
    """`one_per_page` / `runs` (the caller's promise of one token a page, or its page runs):
    the whole write in one launch, one CTA a run, instead of three launches over scratch."""
    if key.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k_cache.shape[-1] % 16:
        _note_once(f"reshape_and_cache has no FP8 kernel for {key.dtype} / head_dim {k_cache.shape[-1]}")
        return fp8_reference.reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping)
    slots = slot_mapping.to(device=k_cache.device, dtype=torch.int64).contiguous()
    runs = None if runs is None else _i32(runs, k_cache.device)
    _extension().reshape_and_cache_fp8(_aligned_rows(key), _aligned_rows(value.to(key.dtype)), k_cache, v_cache,
                                       kv_scales, slots, bool(one_per_page), runs)


def paged_decode_attention(query, k_cache, v_cache, kv_scales, block_tables, seq_lens, scale,
                           page_indices=None, num_splits: int = 0):
    D = query.shape[-1]
    if D not in (64, 128) or query.shape[1] % k_cache.shape[2] or query.shape[1] // k_cache.shape[2] > 8:
        _note_once(f"paged_decode_attention has no FP8 kernel for head_dim {D} / {query.shape[1]} query heads")
        return fp8_reference.paged_decode_attention(query, k_cache, v_cache, kv_scales, block_tables, seq_lens,
                                                    scale, page_indices)
    dev = query.device
    pi = None if page_indices is None else _i32(page_indices, dev)
    out = _extension().paged_decode_attention(
        query.to(torch.float16).contiguous(), k_cache, v_cache, _i32(block_tables, dev), _i32(seq_lens, dev),
        float(scale), pi, int(num_splits), kv_scales.contiguous())
    return out.to(query.dtype)
