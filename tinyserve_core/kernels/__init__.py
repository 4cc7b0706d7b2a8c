"""The ops API: one function per kernel, same signature for the torch reference and
the CUDA extension. Tensors on a CUDA device go to the extension when it is built
(or buildable); everything else runs the reference. See reference.py for the spec
of every op and the cache layouts."""

from __future__ import annotations

import torch

from . import reference
from ._backend import backend_for, backend_info

__all__ = [
    "reshape_and_cache",
    "paged_decode_attention",
    "page_scores",
    "select_pages",
    "copy_blocks",
    "allocate_blocks",
    "backend_for",
    "backend_info",
]


def _ops(t: torch.Tensor):
    return backend_for(t.device)


def reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping) -> None:
    return _ops(k_cache).reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping)


def paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices=None):
    return _ops(query).paged_decode_attention(
        query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices)


def page_scores(query, meta, block_tables, seq_lens, scale, block_size):
    return _ops(query).page_scores(query, meta, block_tables, seq_lens, scale, block_size)


def select_pages(scores, k):
    return _ops(scores).select_pages(scores, k)


def copy_blocks(k_caches, v_caches, metas, block_mapping) -> None:
    if len(k_caches) == 0:
        return
    return _ops(k_caches[0]).copy_blocks(k_caches, v_caches, metas, block_mapping)


def allocate_blocks(refcounts, num):
    return _ops(refcounts).allocate_blocks(refcounts, num)
