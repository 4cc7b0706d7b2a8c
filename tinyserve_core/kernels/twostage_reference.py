"""Torch reference (the spec) of the `twostage` selector's two selections; the CUDA kernels
(csrc/kernels/twostage_select.cuh) take the same arguments. Both decide everything on the
device and return fixed shapes (widths are host-side bounds), so a decode step that runs
them can be captured in a CUDA graph.

Shared arguments: `seq_lens` [B] int32 (context with the new token), `budget` [B] int64
(the budget's pages per sequence, `Budget.pages`, before the clamp to [forced pages, context
pages]), `block_size`, `sink_pages` (forced pages: the sinks and the page being written),
`width` (the output's last dimension)."""

from __future__ import annotations

import torch

from .ranking import forced_pages, take_top, tokens_per_page, top_p_pages


def _clamped_budget(seq_lens, budget, block_size, sink_pages):
    """(context pages [B], forced pages [B, 1], budget [B, 1] clamped to [forced, pages])."""
    n = (seq_lens.long() + block_size - 1) // block_size
    nf = (torch.clamp(n, max=sink_pages) + (n - 1 >= sink_pages).long())[:, None]  # forced_pages(...).sum(-1)
    k = torch.minimum(torch.maximum(budget.long().to(n.device)[:, None], nf), n[:, None])
    return n, nf, k


def twostage_candidates(scores, seq_lens, budget, block_size: int, multiple: float, top_p: float,
                        sink_pages: int, width: int) -> torch.Tensor:
    """Stage 1. `scores` [B, H, M]: page bounds (page_scores, -inf past the context). Keeps
    ceil(budget x multiple) pages per row, forced pages first, then by bound; with top_p > 0
    no more than the fewest (forced first) whose softmax(score + log tokens) reaches top_p,
    but never fewer than the budget. int32 [B, H, width] logical pages ascending, -1 pad."""
    B, H, M = scores.shape
    n, _, k = _clamped_budget(seq_lens, budget, block_size, sink_pages)
    forced = forced_pages(n, M, sink_pages)[:, None, :].expand(B, H, M)
    keys = scores.masked_fill(forced, float("inf"))
    n_cand = torch.ceil(k.expand(B, H).double() * multiple - 1e-9).long()
    if top_p > 0.0:
        logits = scores + tokens_per_page(seq_lens, M, block_size).float().log()[:, None, :]
        need = top_p_pages(torch.softmax(logits, dim=-1), keys, top_p)
        n_cand = torch.minimum(n_cand, torch.maximum(need, k))
    n_cand = torch.minimum(n_cand, n[:, None])
    return take_top(keys, n_cand, width)


def twostage_keep(lse, candidates, seq_lens, budget, block_size: int, top_p: float, sink_pages: int,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2. `lse` [B, H * G, C]: each query head's estimated page logsumexp over the
    candidates (page_estimates); `candidates` [B, H, C] int32 from stage 1. A candidate's
    mass is the mean over the group's heads of each head's softmax over the candidates. Keeps
    the budget's worth of candidates (forced first, then by mass), or with top_p > 0 the
    fewest (forced first) whose mass reaches top_p, clamped to [forced pages, budget]; never
    more than there are candidates. Returns (pages int32 [B, H, width] ascending, -1 pad;
    pages kept int64 [B, H])."""
    B, H, C = candidates.shape
    n, nf, budget_k = _clamped_budget(seq_lens, budget, block_size, sink_pages)
    mass = torch.nan_to_num(torch.softmax(lse, dim=-1), nan=0.0).view(B, H, -1, C).mean(2)
    valid = candidates >= 0
    c, last = candidates.long(), (n - 1)[:, None, None]
    cand_forced = valid & ((c == last) | (c < sink_pages)) & (c <= last)   # forced_pages at the candidates
    keys = mass.masked_fill(~valid, float("-inf")).masked_fill(cand_forced, float("inf"))
    k = budget_k.expand(B, H)
    if top_p > 0.0:
        k = torch.minimum(torch.maximum(top_p_pages(mass, keys, top_p), nf), k)
    k = torch.minimum(k, valid.sum(-1))
    kept = take_top(keys, k, min(width, C)).long()            # positions in `candidates`, ascending
    pages = torch.gather(candidates, 2, kept.clamp(min=0)).masked_fill(kept < 0, -1)
    if pages.shape[-1] < width:
        pages = torch.cat([pages, pages.new_full((B, H, width - pages.shape[-1]), -1)], dim=-1)
    return pages.to(torch.int32), k
