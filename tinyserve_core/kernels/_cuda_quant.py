"""The CUDA backend of the quantised-key ops (quant_reference.py is their spec): input
normalisation over the compiled extension's `quantize_keys` and `page_estimates`."""

from __future__ import annotations

import torch

from . import quant_reference
from ._cuda_ops import _extension, _i32, _note_once


def quantize_keys(k_cache, meta, qkeys, slot_mapping) -> None:
    if k_cache.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        _note_once(f"quantize_keys has no {k_cache.dtype} kernel")
        return quant_reference.quantize_keys(k_cache, meta, qkeys, slot_mapping)
    slots = slot_mapping.to(device=k_cache.device, dtype=torch.int64).contiguous()
    _extension().quantize_keys(k_cache, meta.contiguous(), qkeys, slots,
                               quant_reference.quant_bits(qkeys, k_cache.shape[-1]))


def page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale):
    D = query.shape[-1]
    if D > 256 or D % 8 or query.shape[1] % qkeys.shape[2] or query.shape[1] // qkeys.shape[2] > 8:
        _note_once(f"page_estimates has no kernel for head_dim {D} / {query.shape[1]} query heads")
        return quant_reference.page_estimates(query, qkeys, meta, block_tables, seq_lens, candidates, scale)
    dev = query.device
    return _extension().page_estimates(
        query.float().contiguous(), qkeys, meta.contiguous(), _i32(block_tables, dev), _i32(seq_lens, dev),
        _i32(candidates, dev), float(scale), quant_reference.quant_bits(qkeys, D))
