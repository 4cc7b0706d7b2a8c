"""Torch reference (the spec) of the quantised-key ops behind the `twostage` policy.

A layer that keeps a quantised key copy holds, beside its cache,
  qkeys : uint8 [num_blocks, block_size, num_kv_heads, head_dim * bits / 8]
with bits 8 (one code per channel) or 4 (two codes per byte, the even channel in the
low nibble). The grid is the page's own digest, so the copy costs no scale tensors: per
(page, kv-head), lo_i = the channel minimum in `meta` (the min/max the bounding-box bound
reads) and one range r = max_i(max_i - min_i) for all channels. A key's code on channel i
is round((k_i - lo_i) / r * L), L = 2^bits - 1; dequantised, lo_i + code_i * r / L.
One step per page (not one per channel) makes the estimate q . lo + (r / L) * (q . codes):
an integer-code dot product scaled once per page, so the stage-2 kernel keeps the query
in registers (csrc/NOTES.md; the accuracy of both grids: docs/BENCHMARKS.md, ninth session).
Because the range changes while a page fills, a write re-quantises the written pages
whole (slots 0..highest offset written). All math in float32.
"""

from __future__ import annotations

import torch

from . import bound_copy_reference


def quant_bits(qkeys: torch.Tensor, head_dim: int) -> int:
    """8 or 4, from the copy's last dimension against the head dim."""
    if qkeys.shape[-1] == head_dim:
        return 8
    if qkeys.shape[-1] * 2 == head_dim:
        return 4
    raise ValueError(f"qkeys' last dim {qkeys.shape[-1]} is neither head_dim {head_dim} (int8) nor half of it (int4)")


def page_range(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The grid's one range per page: max over channels (last dim) of hi - lo, keepdim."""
    return (hi - lo).amax(-1, keepdim=True)


def quantize(keys: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes of float32 `keys` [..., D] on the page grid of lo, hi [..., D]
    (broadcast against keys), packed for 4 bits."""
    levels = float(2 ** bits - 1)
    rng = page_range(lo, hi)
    x = (keys - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)) * levels
    codes = torch.round(x).clamp(0, levels).masked_fill(~(rng > 0), 0).to(torch.uint8)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return codes


def dequantize(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 [..., D] keys back from uint8 codes (unpacked first for 4 bits)."""
    if bits == 4:
        c = codes.to(torch.int32)
        codes = torch.stack((c & 15, c >> 4), dim=-1).flatten(-2)
    step = page_range(lo, hi) / float(2 ** bits - 1)
    return lo + codes.float() * step


def quantize_keys(k_cache: torch.Tensor, meta: torch.Tensor, qkeys: torch.Tensor,
                  slot_mapping: torch.Tensor, qbounds: torch.Tensor | None = None) -> None:
    """Re-quantise, into `qkeys`, slots 0..o of every page that `slot_mapping` writes
    (o = the highest offset written to it in this call), against the page's current
    min/max in `meta`, and re-encode those pages' rows of `qbounds` (the int8 bound copy,
    bound_copy_reference.py) when given. Call it after reshape_and_cache has refreshed `meta`."""
    block_size = k_cache.shape[1]
    bits = quant_bits(qkeys, k_cache.shape[-1])
    slots = slot_mapping[slot_mapping >= 0].long()
    # per block, the highest offset written (-1: untouched)
    last = torch.full((k_cache.shape[0],), -1, dtype=torch.long, device=k_cache.device)
    last.scatter_reduce_(0, slots // block_size, slots % block_size, "amax")
    touched = torch.nonzero(last >= 0).flatten()
    if touched.numel() == 0:
        return
    if qbounds is not None:
        bound_copy_reference.write_bound_copy(meta, qbounds, touched)
    last = last[touched]
    m = meta[touched].float()                                   # [U, 2, Hkv, D]
    codes = quantize(k_cache[touched].float(), m[:, None, 0], m[:, None, 1], bits)  # [U, bs, Hkv, Dq]
    inside = torch.arange(block_size, device=k_cache.device)[None, :] <= last[:, None]  # [U, bs]
    cur = qkeys[touched]
    qkeys[touched] = torch.where(inside[:, :, None, None], codes, cur)


def page_estimates(query: torch.Tensor, qkeys: torch.Tensor, meta: torch.Tensor, block_tables: torch.Tensor,
                   seq_lens: torch.Tensor, candidates: torch.Tensor, scale: float) -> torch.Tensor:
    """Estimated attention of each query head over each candidate page, from the
    quantised keys: float32 [B, Hq, C], the logsumexp over the page's context tokens of
    scale * q_h . k_hat (query head h reads kv-head h // group), q rounded to fp16 first
    (a fp16 model's queries already are; the tensor-core kernel multiplies fp16 q). `candidates` [B, Hkv, C]
    int32 holds logical page numbers, -1 = padding (-inf out). softmax over the last
    dim of the result is each candidate page's share of the candidates' attention."""
    B, Hq, D = query.shape
    NB, bs, Hkv, _ = qkeys.shape
    group = Hq // Hkv
    bits = quant_bits(qkeys, D)
    C = candidates.shape[-1]
    cand = candidates.long()
    valid = cand >= 0
    page = cand.clamp(min=0)
    blk = torch.gather(block_tables.long().clamp(0, NB - 1)[:, None, :].expand(B, Hkv, -1), 2, page)  # [B,Hkv,C]
    heads = torch.arange(Hkv, device=query.device)[None, :, None].expand(B, Hkv, C)
    codes = qkeys[blk, :, heads]                                 # [B, Hkv, C, bs, Dq]
    lo = meta[blk, 0, heads].float()[..., None, :]               # [B, Hkv, C, 1, D]
    hi = meta[blk, 1, heads].float()[..., None, :]
    k = dequantize(codes, lo, hi, bits)                          # [B, Hkv, C, bs, D]
    q = query.half().float().view(B, Hkv, group, D)   # fp16 queries: what the kernels multiply
    logits = torch.einsum("bhgd,bhctd->bhgct", q, k) * scale     # [B, Hkv, G, C, bs]
    pos = page[..., None] * bs + torch.arange(bs, device=query.device)  # [B, Hkv, C, bs]
    ok = valid[..., None] & (pos < seq_lens.to(query.device).long()[:, None, None, None])
    logits = logits.masked_fill(~ok[:, :, None], float("-inf"))
    return torch.logsumexp(logits, dim=-1).reshape(B, Hq, C)
