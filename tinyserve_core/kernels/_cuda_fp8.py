"""The CUDA backend of the FP8 (e4m3) cache ops (fp8_reference.py is their spec): input
normalisation over the compiled extension's `reshape_and_cache_fp8`, `page_scores_fp8` and
the FP8 path of `paged_decode_attention`, and sparse decode as those three. Shapes the
kernels do not cover go to the reference, said once."""

from __future__ import annotations

import torch

from . import fp8_reference
from ._cuda_ops import _aligned_rows, _extension, _i32, _note_once, select_forced


def reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping, one_per_page=False,
                      runs=None, meta=None) -> None:
    """`one_per_page` / `runs` (the caller's promise of one token a page, or its page runs):
    the whole write in one launch, one CTA a run, instead of four launches over scratch."""
    if key.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k_cache.shape[-1] % 16:
        _note_once(f"reshape_and_cache has no FP8 kernel for {key.dtype} / head_dim {k_cache.shape[-1]}")
        return fp8_reference.reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping, meta=meta)
    slots = slot_mapping.to(device=k_cache.device, dtype=torch.int64).contiguous()
    runs = None if runs is None else _i32(runs, k_cache.device)
    _extension().reshape_and_cache_fp8(_aligned_rows(key), _aligned_rows(value.to(key.dtype)), k_cache, v_cache,
                                       kv_scales, slots, bool(one_per_page), runs, meta)


def page_scores(query, meta, kv_scales, block_tables, seq_lens, scale, block_size):
    """The kernel reads the query in fp16, as the FP8 attention does: the bound is that of
    the query the attention uses."""
    D = query.shape[-1]
    if D not in (64, 128) or query.shape[1] % meta.shape[2] or query.shape[1] // meta.shape[2] > 8 or scale <= 0:
        _note_once(f"page_scores has no FP8 kernel for head_dim {D} / {query.shape[1]} query heads / scale {scale}")
        return fp8_reference.page_scores(query, meta, kv_scales, block_tables, seq_lens, scale, block_size)
    dev = query.device
    return _extension().page_scores_fp8(query.to(torch.float16).contiguous(), meta.contiguous(),
                                        kv_scales.contiguous(), _i32(block_tables, dev), _i32(seq_lens, dev),
                                        float(scale), int(block_size))


def sparse_decode_attention(query, k_cache, v_cache, meta, kv_scales, block_tables, seq_lens, scale, k,
                            sink_pages=0, force_last=False):
    """page_scores + select_pages + the FP8 decode kernel over the pages (three launches at
    every batch: the one-launch kernel reads a 16-bit cache)."""
    dev = query.device
    tables, lens = _i32(block_tables, dev), _i32(seq_lens, dev)
    scores = page_scores(query, meta, kv_scales, tables, lens, scale, k_cache.shape[1])
    pages = select_forced(scores, lens, k_cache.shape[1], k, sink_pages, force_last)
    out = paged_decode_attention(query, k_cache, v_cache, kv_scales, tables, lens, scale, pages)
    return out, pages, scores


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
