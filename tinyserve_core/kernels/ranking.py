"""Ranking helpers of the top-pages selection policies, in torch (any device): the pages
every policy keeps, the k best of a row, the fewest pages reaching a mass. The policies
(selection/) and the twostage reference (twostage_reference.py) share them."""

from __future__ import annotations

import torch


def forced_pages(num_pages: torch.Tensor, max_pages: int, sink_pages: int, last: bool = True) -> torch.Tensor:
    """bool [B, M]: pages every sparse policy keeps: the page being written (the
    last one; unless `last` is False) and the first `sink_pages` attention-sink pages."""
    p = torch.arange(max_pages, device=num_pages.device)
    n = num_pages[:, None]
    return (((p[None, :] == n - 1) & last) | (p[None, :] < sink_pages)) & (p[None, :] < n)


def take_top(keys: torch.Tensor, k: torch.Tensor, kmax: int) -> torch.Tensor:
    """The k[b,h] highest-key pages of each row, as int32 [B, H, kmax] logical page
    numbers in ascending order with -1 padding. `kmax` >= every k is a host-side
    bound (no device sync). Callers guarantee k <= pages whose key is > -inf, so
    padding pages never get picked."""
    B, H, M = keys.shape
    kmax = min(kmax, M)
    if kmax <= 0:
        return torch.full((B, H, 0), -1, dtype=torch.int32, device=keys.device)
    idx = torch.topk(keys, kmax, dim=-1, sorted=True).indices
    rank = torch.arange(kmax, device=keys.device)
    idx = idx.masked_fill(rank >= k[..., None], M)
    idx = torch.sort(idx, dim=-1).values
    return idx.masked_fill(idx == M, -1).to(torch.int32)


def top_p_pages(prob: torch.Tensor, keys: torch.Tensor, top_p: float) -> torch.Tensor:
    """int64 [B, H]: how many pages, taken in `keys` order (highest first), it takes for
    their `prob` [B, H, M] to sum to `top_p`: the fewest pages reaching that mass."""
    order = torch.argsort(keys, dim=-1, descending=True)
    cum = torch.cumsum(torch.gather(prob, -1, order), dim=-1)
    return (cum < top_p).sum(-1) + 1


def tokens_per_page(seq_lens: torch.Tensor, max_pages: int, block_size: int) -> torch.Tensor:
    """int64 [B, M]: tokens stored in each page of each context (0 past the end)."""
    p = torch.arange(max_pages, device=seq_lens.device)
    return (seq_lens.long()[:, None] - p[None, :] * block_size).clamp(0, block_size)
