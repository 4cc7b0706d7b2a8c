"""Torch reference (the spec) of the int8 page-bound copy that twostage's stage 1 reads.

Quest's bound reads each page's fp16 key min/max rows (`meta`, 4 bytes a channel); at 64 x
32K those rows are half of a quest layer's bytes. Twostage only needs its stage 1 to pick
candidates (4x the budget), so it reads a copy at half the bytes, rounded outward so that it
still bounds every key of the page:

  qbounds : uint8 [num_blocks, num_kv_heads, 2 * D + 32]
    bytes [0, D)        hi8_i: mn + s * hi8_i >= max_i + tol
    bytes [D, 2D)       lo8_i: mn + s * lo8_i <= min_i - tol (both checked in float)
    bytes [2D, 2D + 8)  mn, s as float32: the box's ends widened by tol = 2^-20 (|min| + |max|),
                        mn = min - tol, s = (max + tol - mn) / 254 (one code of headroom).
                        The tol margin is ~8 float ulps of the ends, more than the rounding of
                        the float check, so the real box mn + s * code holds the fp16 one.
    the rest            zeros (rows of whole 32-byte sectors: a row never straddles one more)

The bound over it (`page_scores_copy`) is Quest's sum_i max(q_i lo_i, q_i hi_i), written as
q+ . hi + q- . lo (q+ = max(q, 0), q- = min(q, 0)) over the widened box, with q+ and q- on
an int8 grid rounded up (ceil), so every term can only grow:
  U = scale * max_{h in group} (a + b + 2^-16 * sum_i |q_hi| * (|mn| + 255 s)),
  a = mn * sum_i q_hi, b = s * sq_h * (qp_h . hi8 + qn_h . lo8),
  sq_h = max_i |q_hi| / 126, r_h = 126 / max_i |q_hi|, qp = ceil(q+ * r), qn = ceil(q- * r)
(codes within [-127, 127]). The last term covers the float rounding (the channel sum's, at most
D ulps for head_dim <= 128, and the query grid's few): U is above the real-number bound, not
just up to rounding. Multiplying by r, not dividing by sq, keeps the kernel's query setup to one
division a head.
The dot products are exact integers: the CUDA kernel runs them on IMMA tensor cores. The copy
is written with the key copy (kernels.quantize_keys), from the page's current min/max.
Every division below is tensor by tensor: torch's CUDA division by a Python scalar multiplies
by the reciprocal, and the kernels divide exactly."""

from __future__ import annotations

import torch

from .reference import mask_pages_past_context

HEADER = 32  # bytes after the 2 * D codes: mn, s (float32), zeros: rows of whole 32-byte sectors
Q_LEVELS = 126.0  # the query grid's scale; ceil of the rounded product can give 127
BOX_LEVELS = 254.0
BOX_TOL = 2.0 ** -20   # the box's margin, relative to |min| + |max|
SLACK = 2.0 ** -16     # the score's margin for its float rounding


def row_bytes(head_dim: int) -> int:
    return 2 * head_dim + HEADER


def head_dim_of(qbounds: torch.Tensor) -> int:
    D2 = qbounds.shape[-1] - HEADER
    if D2 <= 0 or D2 % 2:
        raise ValueError(f"qbounds' last dim {qbounds.shape[-1]} is not 2 * head_dim + {HEADER}")
    return D2 // 2


def encode(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """uint8 rows [..., 2D + 32] of the outward-rounded box of float32 lo, hi [..., D]."""
    lo, hi = lo.float(), hi.float()
    mn0 = lo.amin(-1, keepdim=True)
    mx0 = hi.amax(-1, keepdim=True)
    tol = (mn0.abs() + mx0.abs()) * BOX_TOL
    mn = mn0 - tol
    s = (mx0 + tol - mn) / torch.full_like(mx0, BOX_LEVELS)
    flat = ~(s > 0)                                  # all zeros (tol 0): every code 0 is exact
    sd = torch.where(flat, torch.ones_like(s), s)
    lo8 = torch.floor((lo - mn) / sd).clamp(0, BOX_LEVELS + 1)
    hi8 = torch.ceil((hi - mn) / sd).clamp(0, BOX_LEVELS + 1)
    # a code whose float value lies within tol of the box steps outward (code 0 is mn, and
    # code 254 about max + tol, so neither end runs out of codes)
    lo8 = torch.where(mn + sd * lo8 > lo - tol, (lo8 - 1).clamp(min=0), lo8)
    hi8 = torch.where(mn + sd * hi8 < hi + tol, (hi8 + 1).clamp(max=255), hi8)
    lo8 = lo8.masked_fill(flat, 0)
    hi8 = hi8.masked_fill(flat, 0)
    s = s.masked_fill(flat, 0.0)
    head = torch.cat((mn, s), dim=-1).contiguous().view(torch.uint8)     # [..., 8]
    pad = torch.zeros((*lo.shape[:-1], HEADER - 8), dtype=torch.uint8, device=lo.device)
    return torch.cat((hi8.to(torch.uint8), lo8.to(torch.uint8), head, pad), dim=-1)


def decode(rows: torch.Tensor):
    """(lo, hi) float32 [..., D] of the widened box, and mn, s [..., 1]."""
    D = head_dim_of(rows)
    head = rows[..., 2 * D:2 * D + 8].contiguous().view(torch.float32)
    mn, s = head[..., :1], head[..., 1:2]
    hi = mn + s * rows[..., :D].float()
    lo = mn + s * rows[..., D:2 * D].float()
    return lo, hi, mn, s


def write_bound_copy(meta: torch.Tensor, qbounds: torch.Tensor, blocks: torch.Tensor) -> None:
    """Re-encode the rows of `blocks` (int64 ids) from their min/max in `meta` [NB, 2, Hkv, D]."""
    if blocks.numel() == 0:
        return
    m = meta[blocks].float()                                         # [U, 2, Hkv, D]
    qbounds[blocks] = encode(m[:, 0], m[:, 1])


def query_grid(query: torch.Tensor):
    """The int8 grid of queries [..., D] (as float32): (qp, qn) float32 codes, sq [..., 1], the
    channel sums and the sums of magnitudes [..., 1]."""
    q = query.float()
    amax = q.abs().amax(-1, keepdim=True)
    levels = torch.full_like(amax, Q_LEVELS)
    sq = amax / levels
    r = torch.where(amax > 0, levels / torch.where(amax > 0, amax, levels), torch.zeros_like(amax))
    qp = torch.ceil(q.clamp(min=0) * r)
    qn = torch.ceil(q.clamp(max=0) * r)
    return qp, qn, sq, q.sum(-1, keepdim=True), q.abs().sum(-1, keepdim=True)


def page_scores_copy(query: torch.Tensor, qbounds: torch.Tensor, block_tables: torch.Tensor,
                     seq_lens: torch.Tensor, scale: float, block_size: int) -> torch.Tensor:
    """page_scores' contract (float32 [B, Hkv, max_blocks], -inf past the context) over the
    int8 copy: >= Quest's bound of the same page, so >= every key's logit."""
    B, Hq, D = query.shape
    Hkv = qbounds.shape[1]
    if head_dim_of(qbounds) != D:
        raise ValueError(f"qbounds hold head_dim {head_dim_of(qbounds)}, the query {D}")
    group = Hq // Hkv
    rows = qbounds[block_tables.long().clamp(min=0)]                  # [B, P, Hkv, 2D + 32]
    head = rows[..., 2 * D:2 * D + 8].contiguous().view(torch.float32)
    mn, s = head[..., 0], head[..., 1]                               # [B, P, Hkv]
    hi8, lo8 = rows[..., :D].float(), rows[..., D:2 * D].float()
    qp, qn, sq, qsum, qabs = query_grid(query.view(B, Hkv, group, D))   # [B, Hkv, G, D], [.., 1]
    dot = (torch.einsum("bhgd,bphd->bphg", qp, hi8) + torch.einsum("bhgd,bphd->bphg", qn, lo8))
    mn, s = mn[..., None], s[..., None]                               # [B, P, Hkv, 1]
    a = mn * qsum[:, None, :, :, 0]
    b = s * (sq[:, None, :, :, 0] * dot)
    slack = (qabs[:, None, :, :, 0] * SLACK) * (mn.abs() + s * 255.0)
    u = (a + b) + slack
    scores = (u.amax(-1) * scale).permute(0, 2, 1).contiguous()      # [B, Hkv, P]
    return mask_pages_past_context(scores, seq_lens, block_size)
