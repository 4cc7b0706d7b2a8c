"""Torch reference (the spec) of `selection_stats`: how good one layer's page selection was,
for every (sequence, kv-head) of the batch, against the true attention over the whole paged
context. The CUDA kernel (csrc/kernels/selection_stats.cuh) takes the same arguments and
fills the same packed record. selection/stats.py documents what the numbers mean; this
module owns the math and the layout, so the selection layer and the kernel share one spec.

Packed record, float32 [B, Hkv, C + 4M] (M = the block table's width): the per-head
CHANNELS, then four page planes of width M: selected (0/1), oracle (0/1), page bound
scores (NaN past the context), stage-1 candidates (0/1, or NaN when there are none).
Static shapes only (no host sync): the context is gathered to the block table's full width
and masked by its length, so the op can sit inside a captured CUDA graph."""

from __future__ import annotations

import torch

CHANNELS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall",
            "bound_violations", "entropy", "budget_pages")
C = len(CHANNELS)
PLANES = 4


def paged_logits(query, k_cache, block_tables, seq_lens, scale: float, kv_scales=None) -> torch.Tensor:
    """float32 [B, Hkv, G, M * bs]: scale * q . k of every query head (grouped by its
    kv-head) against every token slot of the block table's full width, -inf past each
    context. `kv_scales`: an FP8 cache's page scales (fp8_reference.py); its keys are read
    as codes times their page's K scale (exact: powers of two)."""
    q = query.float()
    B, Hq, D = q.shape
    bs, H = k_cache.shape[1], k_cache.shape[2]
    tables = block_tables.long()
    T = tables.shape[1] * bs
    keys = k_cache[tables].float()                       # junk past each length, masked below
    if kv_scales is not None:
        keys.mul_(kv_scales[tables.clamp(min=0), 0][:, :, None, :, None])
    keys = keys.reshape(B, T, H, D)
    logits = torch.einsum("bhgd,bthd->bhgt", q.view(B, H, Hq // H, D), keys) * scale
    past = torch.arange(T, device=q.device)[None, :] >= seq_lens.long()[:, None]       # [B, T]
    return logits.masked_fill(past[:, None, None, :], float("-inf"))


def page_mask(page_indices: torch.Tensor | None, num_pages: torch.Tensor, H: int, M: int) -> torch.Tensor:
    """bool [B, H, M]: the pages each (sequence, kv-head) lists in `page_indices` [B, H, S]
    (-1 pad), within its context; every page of the context when `page_indices` is None."""
    valid = torch.arange(M, device=num_pages.device)[None, :] < num_pages[:, None]      # [B, M]
    if page_indices is None:
        return valid[:, None, :].expand(-1, H, -1)
    B = num_pages.shape[0]
    idx = page_indices.long()
    m = torch.zeros(B, H, M + 1, dtype=torch.bool, device=num_pages.device)
    m.scatter_(2, torch.where(idx >= 0, idx, M), True)
    return m[:, :, :M] & valid[:, None, :]


def candidate_plane(candidates: torch.Tensor | None, num_pages: torch.Tensor, H: int, M: int) -> torch.Tensor:
    """float32 [B, H, M]: 1 on stage-1 candidates of a two-stage selector; NaN when the
    policy has no candidate stage (so the host can tell "none" from "an empty set")."""
    if candidates is None:
        return torch.full((num_pages.shape[0], H, M), float("nan"), device=num_pages.device)
    return page_mask(candidates, num_pages, H, M).float()


def selection_stats(query, k_cache, meta, block_tables, seq_lens, scale: float, scores: torch.Tensor,
                    page_indices: torch.Tensor | None = None, candidates: torch.Tensor | None = None,
                    entropy: torch.Tensor | None = None, budget: torch.Tensor | None = None,
                    rtol: float = 1e-5) -> torch.Tensor:
    """float32 [B, Hkv, C + 4M], the packed record above. `query` [B, Hq, D]; `k_cache`
    [NB, bs, Hkv, D] and `meta` [NB, 2, Hkv, D] (reference.py's layouts); `scores` [B, Hkv, M]
    the policy's page bounds (-inf past the context); `page_indices` [B, Hkv, S] the selected
    logical pages (-1 pad; None: dense, every page); `candidates` [B, Hkv, S'] likewise for a
    stage 1; `entropy` and `budget` broadcast to [B, Hkv] (None: NaN, and the pages selected).

    Channels: the page mass is the softmax of the true logits summed over the page's tokens,
    averaged over the G query heads of the kv-head; mass recall is the selected pages' mass;
    the oracle is the k highest-mass pages (k = pages selected; ties to the lower page),
    oracle mass their mass, selection recall |oracle & selected| / k (1 when k = 0); bound
    violations count tokens whose logit exceeds its page's score by more than the float32
    rounding of the two dot products, `rtol * |scale| * sum_d |q_d| max(|min_d|, |max_d|)`."""
    q = query.float()
    B, Hq, D = q.shape
    H = meta.shape[2]
    G = Hq // H
    tables = block_tables.long()
    M = tables.shape[1]
    bs = k_cache.shape[1]
    T = M * bs
    n = (seq_lens.long() + bs - 1) // bs
    dev = q.device
    qg = q.view(B, H, G, D)
    logits = paged_logits(query, k_cache, block_tables, seq_lens, scale)        # [B, H, G, T]
    mass = torch.softmax(logits, dim=-1).view(B, H, G, M, bs).sum(-1).mean(2)   # [B, H, M]
    page_valid = (torch.arange(M, device=dev)[None, :] < n[:, None])[:, None, :]  # [B, 1, M]

    chosen = page_mask(page_indices, n, H, M)
    k = chosen.sum(-1)                                                            # [B, H]
    mass_rec = (mass * chosen).sum(-1)
    # The oracle: the k highest-mass pages (pages past the context rank last).
    order = torch.argsort(mass.masked_fill(~page_valid, -1.0), dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(M, device=dev).expand_as(order))
    oracle = rank < k[..., None]
    oracle_mass = (mass * oracle).sum(-1)
    kf = k.float()
    sel_rec = torch.where(k > 0, (oracle & chosen).sum(-1).float() / kf.clamp(min=1), 1.0)

    scores = scores.float()                                                       # [B, H, M], -inf past ctx
    m = meta[tables].float()                                                      # [B, M, 2, H, D]
    mag = torch.maximum(m[:, :, 0].abs(), m[:, :, 1].abs())                       # [B, M, H, D]
    tol = torch.einsum("bhgd,bmhd->bhgm", qg.abs(), mag) * abs(scale) * rtol + 1e-30
    lim = (scores[:, :, None, :] + tol)[..., None].expand(B, H, G, M, bs).reshape(B, H, G, T)
    violations = (logits > lim).sum((2, 3))                                       # -inf logits never count

    nan = torch.full((B, H), float("nan"), device=dev)
    ent = nan if entropy is None else entropy.float().expand(B, H)
    bud = kf if budget is None else budget.float().expand(B, H)
    per_head = torch.stack([kf, n[:, None].expand(B, H).float(), mass_rec, oracle_mass, sel_rec,
                            violations.float(), ent, bud], dim=-1)                # [B, H, C]
    return torch.cat([per_head, chosen.float(), oracle.float(),
                      scores.masked_fill(~page_valid, float("nan")), candidate_plane(candidates, n, H, M)], dim=-1)
