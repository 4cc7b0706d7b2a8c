"""The CUDA backend of `selection_stats` (stats_reference.py is the spec): input normalisation
over the compiled extension's two kernels (csrc/kernels/selection_stats.cuh: the pages, then
the rows), and the shapes they do not cover routed to the reference, said once per case.
Every normalisation is a no-op for the engine's tensors (int32 tables, float32 scores,
contiguous caches), so the op stays two launches per layer inside the captured decode graph
(over an FP8 cache, three: the query's float32 copy, which the kernels read beside the codes)."""

from __future__ import annotations

import torch

from . import fp8_reference, stats_reference
from ._cuda_ops import _extension, _i32, _note_once

_fits: dict[tuple[int, int, int], bool] = {}


def _unsupported(query, k_cache, meta, max_pages: int) -> str | None:
    D, Hq, H = query.shape[-1], query.shape[1], k_cache.shape[2]
    dtypes = (torch.float16, torch.bfloat16, torch.float32, fp8_reference.FP8)
    if k_cache.dtype not in dtypes or meta.dtype != k_cache.dtype:
        return f"selection_stats has no kernel for a {k_cache.dtype} cache"
    if D not in (64, 128) or Hq % H or Hq // H > 8:
        return f"selection_stats has no kernel for head_dim {D} / {Hq} query heads over {H}"
    if max_pages == 0:
        return "selection_stats: a block table of width 0"
    if k_cache.data_ptr() % 16 or meta.data_ptr() % 16 or not (k_cache.is_contiguous() and meta.is_contiguous()):
        return "selection_stats reads 16-byte aligned, contiguous caches"
    key = (query.device.index or 0, Hq // H, max_pages)
    if key not in _fits:
        with torch.cuda.device(query.device):   # the limit of the query's GPU
            _fits[key] = bool(_extension().selection_stats_fits(Hq // H, max_pages))
    if not _fits[key]:
        return f"selection_stats: {max_pages} pages per row exceed the kernel's shared memory"
    return None


def _per_head(t: torch.Tensor | None, B: int, H: int, dtypes=(torch.float32,)) -> torch.Tensor | None:
    """`t` broadcast to [B, H] as a view (the kernel reads its strides); cast to float32
    unless the kernel reads its dtype as it is (int64 budgets, the policies' own)."""
    if t is None:
        return None
    return (t if t.dtype in dtypes else t.float()).expand(B, H)


def selection_stats(query, k_cache, meta, block_tables, seq_lens, scale, scores, page_indices=None,
                    candidates=None, entropy=None, budget=None, rtol=1e-5, kv_scales=None):
    """`kv_scales`: an FP8 cache's page scales (its keys and bounds are codes under them)."""
    why = _unsupported(query, k_cache, meta, block_tables.shape[1])
    if why is not None:
        _note_once(why)
        if kv_scales is not None:
            return fp8_reference.selection_stats(query, k_cache, meta, kv_scales, block_tables, seq_lens, scale,
                                                 scores, page_indices, candidates, entropy, budget, rtol)
        return stats_reference.selection_stats(query, k_cache, meta, block_tables, seq_lens, scale, scores,
                                               page_indices, candidates, entropy, budget, rtol)
    dev = query.device
    B, H = query.shape[0], k_cache.shape[2]
    q = query if query.dtype in (k_cache.dtype, torch.float32) else query.float()
    return _extension().selection_stats(
        q.contiguous(), k_cache, meta, _i32(block_tables, dev), _i32(seq_lens, dev), scores.float().contiguous(),
        None if page_indices is None else _i32(page_indices, dev), None if candidates is None else _i32(candidates, dev),
        _per_head(entropy, B, H), _per_head(budget, B, H, (torch.float32, torch.int64)), float(scale), float(rtol),
        None if kv_scales is None else kv_scales.contiguous())
