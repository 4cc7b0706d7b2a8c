"""The CUDA backend of the ops API: reference.py's signatures over the compiled extension.

These wrappers only normalise inputs (index dtypes, contiguity, the cache dtype) and route
the cases the kernels do not cover (fp32 attention, head_dim other than 64/128, more than
8 query heads per kv-head) to the reference, saying so once per case."""

from __future__ import annotations

import sys

import torch

from . import reference
from .ranking import forced_pages

_noted: set[str] = set()
_ext = None  # the compiled extension, bound by _backend.build() when it loads


def bind(ext) -> None:
    global _ext
    _ext = ext


def _extension():
    if _ext is None:  # _backend builds before it hands this module out
        raise RuntimeError("the CUDA extension is not loaded: call tinyserve_core.kernels._backend.build()")
    return _ext


def _note_once(what: str) -> None:
    if what not in _noted:
        _noted.add(what)
        print(f"tinyserve: {what}; using the torch reference for it", file=sys.stderr)


def _i32(t: torch.Tensor, device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.int32).contiguous()


def _aligned_rows(t: torch.Tensor) -> torch.Tensor:
    vec = 16 // t.element_size()
    ok = (t.stride(-1) == 1 and t.stride(0) % vec == 0 and t.stride(1) % vec == 0
          and t.data_ptr() % 16 == 0)
    return t if ok else t.contiguous()


def reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping, one_per_page=False, runs=None) -> None:
    key = _aligned_rows(key.to(k_cache.dtype))
    value = _aligned_rows(value.to(v_cache.dtype))
    slots = slot_mapping.to(device=k_cache.device, dtype=torch.int64).contiguous()
    runs = None if runs is None or meta is None else _i32(runs, k_cache.device)
    _extension().reshape_and_cache(key, value, k_cache, v_cache, meta, slots, bool(one_per_page), runs)


def _attention_supported(query, k_cache) -> str | None:
    if k_cache.dtype not in (torch.float16, torch.bfloat16):
        return f"paged_decode_attention has no {k_cache.dtype} kernel"
    if query.shape[-1] not in (64, 128):
        return f"paged_decode_attention has no head_dim {query.shape[-1]} kernel"
    if query.shape[1] % k_cache.shape[2] or query.shape[1] // k_cache.shape[2] > 8:
        return "paged_decode_attention kernel serves 1..8 query heads per kv-head"
    return None


def paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale,
                           page_indices=None, num_splits: int = 0):
    why = _attention_supported(query, k_cache)
    if why is not None:
        _note_once(why)
        return reference.paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens,
                                                scale, page_indices)
    dev = query.device
    pi = None if page_indices is None else _i32(page_indices, dev)
    out = _extension().paged_decode_attention(
        query.to(k_cache.dtype).contiguous(), k_cache, v_cache, _i32(block_tables, dev),
        _i32(seq_lens, dev), float(scale), pi, int(num_splits))
    return out.to(query.dtype)


def page_scores(query, meta, block_tables, seq_lens, scale, block_size):
    if query.shape[-1] not in (64, 128) or scale <= 0:
        _note_once(f"page_scores has no kernel for head_dim {query.shape[-1]} / scale {scale}")
        return reference.page_scores(query, meta, block_tables, seq_lens, scale, block_size)
    dev = query.device
    return _extension().page_scores(query.to(meta.dtype).contiguous(), meta.contiguous(),
                               _i32(block_tables, dev), _i32(seq_lens, dev), float(scale),
                               int(block_size))


def select_pages(scores, k):
    if scores.shape[-1] > 4096 or scores.dtype != torch.float32:
        return reference.select_pages(scores, k)  # torch.topk handles the long rows
    return _extension().select_pages(scores.contiguous(), int(k))


def sparse_decode_one_launch(query, k_cache, block_tables, k) -> bool:
    """Whether sparse_decode_attention runs this shape as one launch: a batch of at most the
    tuning row's sparse_fused_max_batch that the one-launch plan fits."""
    ext = _extension()
    B, M = block_tables.shape
    return (_attention_supported(query, k_cache) is None and B <= ext.sparse_fused_max_batch() and M <= 4096
            and ext.sparse_decode_splits(B, k_cache.shape[2], M, int(k), k_cache.shape[1], query.shape[-1]) > 0)


def sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k, sink_pages=0,
                            force_last=False, fused: bool | None = None, num_splits: int = 0):
    """`fused` None: one launch when the batch is at most the tuning row's
    sparse_fused_max_batch and the shape fits one launch; True / False force a path (a
    forced launch that cannot fit raises)."""
    why = _attention_supported(query, k_cache) or (
        None if scale > 0 and k >= 1 else "sparse_decode_attention kernel needs scale > 0 and k >= 1")
    if why is not None:
        _note_once(why)
        return reference.sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k,
                                                 sink_pages, force_last)
    ext, dev = _extension(), query.device
    B, M = block_tables.shape
    q = query.to(k_cache.dtype).contiguous()
    tables, lens = _i32(block_tables, dev), _i32(seq_lens, dev)
    if fused is None:
        fused = sparse_decode_one_launch(query, k_cache, block_tables, k)
    if fused:
        if q.data_ptr() % 16:
            q = q.clone()  # the one-launch kernel reads query rows as 16-byte vectors
        out, pages, scores = ext.sparse_decode_attention(q, k_cache, v_cache, meta.contiguous(), tables, lens,
                                                         float(scale), int(k), int(sink_pages), bool(force_last),
                                                         int(num_splits))
        return out.to(query.dtype), pages, scores
    scores = page_scores(q, meta, tables, lens, scale, k_cache.shape[1])
    pages = select_forced(scores, lens, k_cache.shape[1], k, sink_pages, force_last)
    out = paged_decode_attention(q, k_cache, v_cache, tables, lens, scale, pages)
    return out.to(query.dtype), pages, scores


def select_forced(scores, seq_lens, block_size, k, sink_pages, force_last):
    """select_pages of the k best pages with the sink pages (and the last page, when
    `force_last`) always among them: reference.top_pages' set, in any order."""
    keys = scores
    if sink_pages or force_last:
        n = (seq_lens.long() + block_size - 1) // block_size
        forced = forced_pages(n, scores.shape[-1], sink_pages, bool(force_last))
        keys = scores.masked_fill(forced[:, None, :], float("inf"))
    return select_pages(keys, k)


def copy_blocks(k_caches, v_caches, metas, block_mapping) -> None:
    if block_mapping.numel() == 0 or len(k_caches) == 0:
        return
    tensors = list(k_caches) + list(v_caches) + (list(metas) if metas is not None else [])
    mapping = block_mapping.to(device=k_caches[0].device, dtype=torch.int64).reshape(-1, 2).contiguous()
    _extension().copy_blocks(tensors, mapping)


def allocate_blocks(refcounts, num):
    if refcounts.dtype != torch.int32 or not refcounts.is_contiguous():
        raise TypeError("allocate_blocks: refcounts must be a contiguous int32 tensor")
    return _extension().allocate_blocks(refcounts, int(num))


def decode_num_splits(batch: int, num_kv_heads: int, max_tokens: int, head_dim: int = 128) -> int:
    """The split-K count paged_decode_attention picks for this shape on this GPU."""
    return int(_extension().decode_num_splits(batch, num_kv_heads, max_tokens, head_dim))
