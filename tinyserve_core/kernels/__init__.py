"""The ops API: one function per kernel, same signature for the torch reference and
the CUDA extension. Tensors on a CUDA device go to the extension when it is built
(or buildable); everything else runs the reference. See reference.py for the spec
of every op and the cache layouts."""

from __future__ import annotations

import torch

from . import quant_reference, reference
from ._backend import backend_for, backend_info

__all__ = [
    "reshape_and_cache",
    "paged_decode_attention",
    "page_scores",
    "select_pages",
    "sparse_decode_attention",
    "copy_blocks",
    "allocate_blocks",
    "quantize_keys",
    "page_estimates",
    "backend_for",
    "backend_info",
]


def _ops(t: torch.Tensor):
    return backend_for(t.device)


def _quant_ops(t: torch.Tensor):
    if backend_for(t.device) is reference:
        return quant_reference
    from . import _cuda_quant  # only once the extension is loaded

    return _cuda_quant


def reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping, qkeys=None) -> None:
    """`qkeys`: the layer's quantised key copy, when it keeps one (quant_reference.py):
    the written pages are re-quantised after their min/max are refreshed."""
    _ops(k_cache).reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping)
    if qkeys is not None:
        quantize_keys(k_cache, meta, qkeys, slot_mapping)


def quantize_keys(k_cache, meta, qkeys, slot_mapping) -> None:
    return _quant_ops(k_cache).quantize_keys(k_cache, meta, qkeys, slot_mapping)


def page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale):
    return _quant_ops(query).page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale)


def paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices=None):
    return _ops(query).paged_decode_attention(
        query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices)


def page_scores(query, meta, block_tables, seq_lens, scale, block_size):
    return _ops(query).page_scores(query, meta, block_tables, seq_lens, scale, block_size)


def select_pages(scores, k):
    return _ops(scores).select_pages(scores, k)


def sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k):
    """page_scores + select_pages(k) + paged_decode_attention in one op: (output, pages).
    On CUDA, small batches run as one fused launch (kernels/_cuda_sparse.py)."""
    if _ops(query) is reference:
        return reference.sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k)
    from . import _cuda_sparse  # only once the extension is loaded

    return _cuda_sparse.sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k)


def copy_blocks(k_caches, v_caches, metas, block_mapping) -> None:
    if len(k_caches) == 0:
        return
    return _ops(k_caches[0]).copy_blocks(k_caches, v_caches, metas, block_mapping)


def allocate_blocks(refcounts, num):
    return _ops(refcounts).allocate_blocks(refcounts, num)
