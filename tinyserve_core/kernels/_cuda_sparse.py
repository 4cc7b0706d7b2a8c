"""The CUDA backend of `sparse_decode_attention`: scoring, selection and attention over the
selected pages. Small batches take the fused kernel (one launch, thread-block clusters,
sm_90+; csrc/kernels/fused_sparse.cuh), larger ones the three kernels page_scores ->
select_pages -> paged_decode_attention; the threshold is the device's tuning row."""

from __future__ import annotations

import torch

from . import _cuda_ops

PATHS = ("auto", "fused", "three")


def _fused_supported(query, k_cache, meta, block_tables) -> bool:
    return (k_cache.dtype in (torch.float16, torch.bfloat16) and meta.dtype == k_cache.dtype
            and query.shape[-1] in (64, 128) and query.shape[1] % k_cache.shape[2] == 0
            and query.shape[1] // k_cache.shape[2] <= 8)


def plan(query, k_cache, meta, block_tables, any_batch: bool = False) -> int:
    """The fused path's cluster size for these inputs, 0 when the three kernels serve them
    (any_batch: whatever the device's batch threshold says)."""
    if not _fused_supported(query, k_cache, meta, block_tables):
        return 0
    return int(_cuda_ops._extension().sparse_decode_plan(query.shape[0], k_cache.shape[2], block_tables.shape[1],
                                                          any_batch))


def path_name(query, k_cache, meta, block_tables) -> str:
    """Which path `auto` takes, as the benchmark prints it."""
    c = plan(query, k_cache, meta, block_tables)
    return f"fused (cluster {c})" if c else "3 kernels"


def sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k,
                            path: str = "auto", cluster: int = 0):
    """reference.sparse_decode_attention's contract. path: auto (the plan), fused (cluster
    size `cluster`, else the plan's at any batch, else 1) or three; the fused path returns
    the pages of each row in ascending order."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    c = plan(query, k_cache, meta, block_tables) if path == "auto" else 0
    if path == "fused":
        if not _fused_supported(query, k_cache, meta, block_tables):
            raise ValueError("the fused sparse path serves fp16/bf16, head_dim 64/128, 1..8 query heads per kv-head")
        c = cluster or plan(query, k_cache, meta, block_tables, any_batch=True) or 1
    if c:
        dev = query.device
        out, pages = _cuda_ops._extension().fused_sparse_decode(
            query.to(k_cache.dtype).contiguous(), k_cache, v_cache, meta.contiguous(),
            _cuda_ops._i32(block_tables, dev), _cuda_ops._i32(seq_lens, dev), float(scale), int(k), int(c))
        return out.to(query.dtype), pages
    scores = _cuda_ops.page_scores(query, meta, block_tables, seq_lens, scale, k_cache.shape[1])
    pages = _cuda_ops.select_pages(scores, k)
    return _cuda_ops.paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale, pages), pages
