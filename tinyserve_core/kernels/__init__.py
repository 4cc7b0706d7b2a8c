"""The ops API: one function per kernel, same signature for the torch reference and
the CUDA extension. Tensors on a CUDA device go to the extension when it is built
(or buildable); everything else runs the reference. See reference.py for the spec
of every op and the cache layouts; fp8_reference.py for the FP8 (e4m3) cache, which the
same ops take (with its per-page scales, `kv_scales`) when the cache dtype is
torch.float8_e4m3fn."""

from __future__ import annotations

import importlib

import torch

from . import (bound_copy_reference, fp8_reference, fused_reference, prefill_reference, quant_reference, reference,
               stats_reference, twostage_reference)
from ._backend import backend_for, backend_info

__all__ = [
    "reshape_and_cache",
    "paged_decode_attention",
    "prefill_attention",
    "page_scores",
    "select_pages",
    "sparse_decode_attention",
    "sparse_decode_one_launch",
    "copy_blocks",
    "allocate_blocks",
    "quantize_keys",
    "page_estimates",
    "page_scores_copy",
    "twostage_candidates",
    "twostage_keep",
    "selection_stats",
    "rms_norm",
    "add_rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "linear",
    "backend_for",
    "backend_info",
    "FP8",
]

FP8 = fp8_reference.FP8


def _ops(t: torch.Tensor):
    return backend_for(t.device)


def _impl(t: torch.Tensor, spec, cuda: str):
    """The CUDA wrappers `cuda` (a module of this package, imported only once the extension
    is loaded) for a tensor the extension serves, else the torch spec `spec`."""
    if backend_for(t.device) is reference:
        return spec
    return importlib.import_module(f".{cuda}", __name__)


def _quant_ops(t: torch.Tensor, spec=quant_reference):
    """The twostage ops (_cuda_quant.py) or their torch spec."""
    return _impl(t, spec, "_cuda_quant")


def _fused_ops(t: torch.Tensor):
    return _impl(t, fused_reference, "_cuda_fused")


def _fp8_ops(t: torch.Tensor):
    return _impl(t, fp8_reference, "_cuda_fp8")


def _check_fp8(k_cache, kv_scales, meta=None, qkeys=None, needs_bounds=False) -> bool:
    """Whether the cache is FP8; an FP8 cache needs its scales, keeps its page key bounds
    (`meta`, when given or `needs_bounds`) as float8_e4m3fn codes and keeps no quantised key
    copy (`qkeys`); a 16/32-bit one takes no scales."""
    if k_cache.dtype != FP8:
        if kv_scales is not None:
            raise ValueError(f"kv_scales go with a float8_e4m3fn cache, not {k_cache.dtype}")
        return False
    if kv_scales is None:
        raise ValueError("a float8_e4m3fn cache needs its kv_scales [num_blocks, 2, num_kv_heads]")
    if needs_bounds and meta is None:
        raise ValueError("this op reads the page key bounds (meta) of the float8_e4m3fn cache")
    if meta is not None and meta.dtype != FP8:
        raise ValueError(f"the page key bounds of a float8_e4m3fn cache are float8_e4m3fn codes, not {meta.dtype}")
    if qkeys is not None:
        raise ValueError("a float8_e4m3fn cache keeps no quantised key copy")
    return True


def reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping, qkeys=None, kv_scales=None,
                      one_per_page=False, runs=None, qbounds=None) -> None:
    """`qkeys`: the layer's quantised key copy, when it keeps one (quant_reference.py):
    the written pages are re-quantised after their min/max are refreshed, and their rows of
    `qbounds`, the int8 bound copy beside it (bound_copy_reference.py), re-encoded. `kv_scales`: the
    per-page scales of an FP8 cache (fp8_reference.py), updated by the write with its page
    key bounds (`meta`: codes under the page's K scale, or None).
    `one_per_page`: the caller promises that no two tokens of the call lie in one page (a
    decode step: one token per sequence, in its own last page); the CUDA op then updates
    the page bounds per token, without the bookkeeping a call of many tokens per page needs.
    `runs`: the call's page runs as `cache_runs.page_runs` gives them (int32 [R, 2]; a
    prefill's), which the CUDA op then takes instead of finding them. The result is the
    same either way."""
    if _check_fp8(k_cache, kv_scales, meta, qkeys):
        return _fp8_ops(k_cache).reshape_and_cache(key, value, k_cache, v_cache, kv_scales, slot_mapping,
                                                   one_per_page, runs, meta)
    _ops(k_cache).reshape_and_cache(key, value, k_cache, v_cache, meta, slot_mapping, one_per_page, runs)
    if qkeys is not None:
        quantize_keys(k_cache, meta, qkeys, slot_mapping, qbounds)
    elif qbounds is not None:
        raise ValueError("the int8 bound copy (qbounds) is written with the quantised key copy (qkeys)")


def quantize_keys(k_cache, meta, qkeys, slot_mapping, qbounds=None) -> None:
    """Re-quantise the pages `slot_mapping` writes into `qkeys` and, when given, re-encode
    their rows of the int8 bound copy `qbounds` [NB, Hkv, 2D + 32]."""
    return _quant_ops(k_cache).quantize_keys(k_cache, meta, qkeys, slot_mapping, qbounds)


def page_scores_copy(query, qbounds, block_tables, seq_lens, scale, block_size):
    """page_scores over the int8 bound copy (bound_copy_reference.py): >= Quest's bound of
    every page, at half its bytes; twostage's stage 1."""
    return _quant_ops(query, bound_copy_reference).page_scores_copy(query, qbounds, block_tables, seq_lens, scale,
                                                                    block_size)


def page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale):
    return _quant_ops(query).page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale)


def twostage_candidates(scores, seq_lens, budget, block_size, multiple, top_p, sink_pages, width):
    return _quant_ops(scores, twostage_reference).twostage_candidates(
        scores, seq_lens, budget, block_size, multiple, top_p, sink_pages, width)


def twostage_keep(lse, candidates, seq_lens, budget, block_size, top_p, sink_pages, width):
    return _quant_ops(lse, twostage_reference).twostage_keep(
        lse, candidates, seq_lens, budget, block_size, top_p, sink_pages, width)


def selection_stats(query, k_cache, meta, block_tables, seq_lens, scale, scores=None, page_indices=None,
                    candidates=None, entropy=None, budget=None, rtol=1e-5, kv_scales=None):
    """One layer's selection statistics for the whole batch, packed float32 [B, Hkv, C + 4M]
    (stats_reference.py is the spec); `scores` None: the Quest page bounds (page_scores).
    On a GPU two kernel launches (csrc/kernels/selection_stats.cuh). Over an FP8 cache (with its
    `kv_scales`) the statistics are those of its dequantised keys and bounds
    (fp8_reference.selection_stats): what the FP8 attention and scores read; the kernel reads
    the codes."""
    if scores is None:
        scores = page_scores(query, meta, block_tables, seq_lens, scale, k_cache.shape[1], kv_scales)
    args = (query, k_cache, meta, block_tables, seq_lens, scale, scores, page_indices, candidates, entropy, budget,
            rtol)
    fp8 = _check_fp8(k_cache, kv_scales, meta, needs_bounds=True)
    if backend_for(query.device) is reference:
        return fp8_reference.selection_stats(*args[:3], kv_scales, *args[3:]) if fp8 else \
            stats_reference.selection_stats(*args)
    from . import _cuda_stats  # only once the extension is loaded

    return _cuda_stats.selection_stats(*args, kv_scales=kv_scales)


def paged_decode_attention(query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices=None,
                           kv_scales=None):
    if _check_fp8(k_cache, kv_scales):
        return _fp8_ops(query).paged_decode_attention(query, k_cache, v_cache, kv_scales, block_tables,
                                                      seq_lens, scale, page_indices)
    return _ops(query).paged_decode_attention(
        query, k_cache, v_cache, block_tables, seq_lens, scale, page_indices)


def prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start, num_cached, scale,
                      kv_scales=None):
    """Causal attention of a prefill step's packed new tokens over their cached prefixes
    and themselves (prefill_reference.py is the spec). An FP8 cache (with its `kv_scales`)
    is read through its cached prefixes' pages dequantised to q's dtype (the new tokens
    attend at full precision, as in vLLM; only later steps read them quantised)."""
    if _check_fp8(k_cache, kv_scales):
        k_cache, v_cache, block_tables = fp8_reference.prefill_view(k, v, k_cache, v_cache, kv_scales, block_tables,
                                                                    query_start, num_cached)
    if backend_for(q.device) is reference:
        return prefill_reference.prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start,
                                                   num_cached, scale)
    from . import _cuda_prefill  # only once the extension is loaded

    return _cuda_prefill.prefill_attention(q, k, v, k_cache, v_cache, block_tables, query_start, num_cached,
                                           scale)


def page_scores(query, meta, block_tables, seq_lens, scale, block_size, kv_scales=None):
    """Quest's bound of each page's logits (reference.py); over an FP8 cache's bounds (float8
    codes) with the cache's `kv_scales`, whose K scales they are under (fp8_reference.py)."""
    if meta.dtype == FP8:
        if kv_scales is None:
            raise ValueError("float8_e4m3fn page bounds need the cache's kv_scales")
        return _fp8_ops(query).page_scores(query, meta, kv_scales, block_tables, seq_lens, scale, block_size)
    if kv_scales is not None:
        raise ValueError(f"kv_scales go with float8_e4m3fn page bounds, not {meta.dtype}")
    return _ops(query).page_scores(query, meta, block_tables, seq_lens, scale, block_size)


def select_pages(scores, k):
    return _ops(scores).select_pages(scores, k)


def sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k, sink_pages=0,
                            force_last=False, kv_scales=None):
    """Quest in one op: page bounds, the k best pages per (sequence, kv-head), attention
    over them (reference.py is the spec). Returns (out, page_indices, scores). On a GPU
    small batches run as one launch (csrc/kernels/sparse_decode.cuh; up to the tuning
    row's `sparse_fused_max_batch`), larger ones as page_scores + select_pages + decode,
    and so does an FP8 cache (with its `kv_scales`) at every batch."""
    if _check_fp8(k_cache, kv_scales, meta, needs_bounds=True):
        return _fp8_ops(query).sparse_decode_attention(query, k_cache, v_cache, meta, kv_scales, block_tables,
                                                       seq_lens, scale, k, sink_pages, force_last)
    return _ops(query).sparse_decode_attention(query, k_cache, v_cache, meta, block_tables, seq_lens, scale, k,
                                               sink_pages, force_last)


def sparse_decode_one_launch(query, k_cache, block_tables, k) -> bool:
    """Whether sparse_decode_attention would run this shape as one launch (a GPU whose
    tuning row enables it, a small enough batch, a 16-bit cache); False for the torch
    reference."""
    ops = _ops(query)
    return ops is not reference and k_cache.dtype != FP8 and ops.sparse_decode_one_launch(query, k_cache, block_tables, k)


def copy_blocks(k_caches, v_caches, metas, block_mapping) -> None:
    if len(k_caches) == 0:
        return
    return _ops(k_caches[0]).copy_blocks(k_caches, v_caches, metas, block_mapping)


def allocate_blocks(refcounts, num):
    return _ops(refcounts).allocate_blocks(refcounts, num)


def rms_norm(x, weight, eps):
    """HF's RMSNorm of x [..., hidden] (fused_reference.py)."""
    return _fused_ops(x).rms_norm(x, weight, eps)


def add_rms_norm(x, delta, weight, eps):
    """(x + delta, rms_norm(x + delta)): the residual add fused with the next norm."""
    return _fused_ops(x).add_rms_norm(x, delta, weight, eps)


def rotary_embedding(q, k, positions, inv_freq) -> None:
    """Rotate-half RoPE of q [N, Hq, D] and k [N, Hkv, D] in place at positions [N]."""
    return _fused_ops(q).rotary_embedding(q, k, positions, inv_freq)


def silu_and_mul(gate_up):
    """silu(gate) * up of gate_up [..., 2I] = [gate | up]."""
    return _fused_ops(gate_up).silu_and_mul(gate_up)


def linear(x, weight, bias=None, static_weight: bool = False):
    """F.linear; on a GPU a bandwidth-bound kernel of its own for 1-4 rows of x.
    `static_weight`: the weight and bias are not written by the op launched just before
    this one (a model's weights while it serves), so the kernel may start reading them
    while that op still runs (programmatic dependent launch, sm_90+). Same result."""
    return _fused_ops(x).linear(x, weight, bias, static_weight)
