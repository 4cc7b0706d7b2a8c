"""The CUDA backend of the twostage ops (quant_reference.py, bound_copy_reference.py and
twostage_reference.py are their spec): input normalisation over the compiled extension's
`quantize_keys` (with the int8 bound copy), stage 1 over that copy (`page_scores_copy`), the page
estimates (`estimate_page_lse`, warp per page; the older CTA-per-page `page_estimates` for
the shapes it does not cover) and the two selections."""

from __future__ import annotations

import torch

from . import bound_copy_reference, quant_reference, twostage_reference
from ._cuda_ops import _extension, _i32, _note_once

MAX_SELECT_ITEMS = 16384  # csrc/kernels/twostage_select.cuh kMaxSelectItems


def quantize_keys(k_cache, meta, qkeys, slot_mapping, qbounds=None) -> None:
    if k_cache.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        _note_once(f"quantize_keys has no {k_cache.dtype} kernel")
        return quant_reference.quantize_keys(k_cache, meta, qkeys, slot_mapping, qbounds)
    slots = slot_mapping.to(device=k_cache.device, dtype=torch.int64).contiguous()
    _extension().quantize_keys(k_cache, meta.contiguous(), qkeys, slots,
                               quant_reference.quant_bits(qkeys, k_cache.shape[-1]), qbounds)


def page_scores_copy(query, qbounds, block_tables, seq_lens, scale, block_size):
    D = query.shape[-1]
    if D not in (64, 128) or query.shape[1] % qbounds.shape[1] or query.shape[1] // qbounds.shape[1] > 8:
        _note_once(f"page_scores_copy has no kernel for head_dim {D} / {query.shape[1]} query heads")
        return bound_copy_reference.page_scores_copy(query, qbounds, block_tables, seq_lens, scale, block_size)
    dev = query.device
    return _extension().page_scores_copy(query.contiguous(), qbounds, _i32(block_tables, dev),
                                         _i32(seq_lens, dev), float(scale), int(block_size))


def page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale):
    D = query.shape[-1]
    if D > 256 or D % 8 or query.shape[1] % qkeys.shape[2] or query.shape[1] // qkeys.shape[2] > 8:
        _note_once(f"page_estimates has no kernel for head_dim {D} / {query.shape[1]} query heads")
        return quant_reference.page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale)
    dev = query.device
    bits = quant_reference.quant_bits(qkeys, D)
    fast = D in (64, 128) and meta.dtype in (torch.float16, torch.bfloat16)
    op = _extension().estimate_page_lse if fast else _extension().page_estimates
    return op(query.float().contiguous(), qkeys, meta.contiguous(), _i32(block_tables, dev), _i32(seq_lens, dev),
              _i32(candidates, dev), float(scale), bits)


def _fits(op: str, items: int) -> bool:
    """Whether a row of `items` fits the selection kernel's shared memory (else the reference)."""
    if items <= MAX_SELECT_ITEMS:
        return True
    _note_once(f"{op} has no kernel for {items} items per row")
    return False


def _i64(t: torch.Tensor, device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.int64).contiguous()


def twostage_candidates(scores, seq_lens, budget, block_size, multiple, top_p, sink_pages, width):
    if not _fits("twostage_candidates", scores.shape[-1]):
        return twostage_reference.twostage_candidates(scores, seq_lens, budget, block_size, multiple, top_p,
                                                      sink_pages, width)
    dev = scores.device
    return _extension().twostage_candidates(scores.float().contiguous(), _i32(seq_lens, dev), _i64(budget, dev),
                                            int(block_size), float(multiple), float(top_p), int(sink_pages),
                                            int(width))


def twostage_keep(lse, candidates, seq_lens, budget, block_size, top_p, sink_pages, width):
    if not _fits("twostage_keep", candidates.shape[-1]):
        return twostage_reference.twostage_keep(lse, candidates, seq_lens, budget, block_size, top_p,
                                                sink_pages, width)
    dev = lse.device
    pages, kept = _extension().twostage_keep(lse.float().contiguous(), _i32(candidates, dev), _i32(seq_lens, dev),
                                             _i64(budget, dev), int(block_size), float(top_p), int(sink_pages),
                                             int(width))
    return pages, kept
