"""`oracle` and `oracle_p`: pages chosen by the true attention, the measuring sticks.

`oracle` ranks each page by the softmax mass the current query actually puts on it
(query heads of a GQA group summed) and keeps the same budget as quest; `oracle_p`
keeps the fewest pages holding `top_p_mass` of that true attention (group mean), the
budget only its cap: the least any selector could attend at that mass. The page
being written and the sink pages stay in both. They compute the full attention of
every decode query, so they measure, never serve: what the best possible page choice
reaches, which separates a policy's ranking error from the budget's own cost."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (EXEMPT, Policy, SelectContext, Selection, TopPagesParams, TopPagesPolicy, forced_pages,
                   take_top, top_p_pages)
from .params import Budget, check_float
from .quest import QuestParams
from .true_attention import batched_page_mass


def true_page_mass(ctx: SelectContext, num_pages: torch.Tensor, max_pages: int) -> torch.Tensor:
    """float32 [B, Hkv, M]: true attention mass per page, summed over the group's query
    heads; -inf past each context. Batched: no per-sequence host sync."""
    mass = batched_page_mass(ctx)
    valid = torch.arange(max_pages, device=mass.device)[None, :] < num_pages[:, None]
    return mass.masked_fill(~valid[:, None, :], float("-inf"))


class OraclePolicy(TopPagesPolicy):
    name = "oracle"
    # Batched tensor ops only, but not yet captured and checked in a CUDA graph: eager.
    graph_safe = False
    reads_keys = True
    Params = QuestParams  # the same knobs as quest, so the two compare at equal settings

    def rank(self, ctx, num_pages, max_pages):
        return true_page_mass(ctx, num_pages, max_pages), None


@dataclass(frozen=True, slots=True)
class OracleTopPParams(TopPagesParams):
    budget: Budget = Budget(fraction=1.0)  # the most pages it may take: no cap
    top_p_mass: float = 0.95


class OracleTopPPolicy(Policy):
    name = "oracle_p"
    graph_safe = False
    reads_keys = True
    Params = OracleTopPParams
    _validators = {**TopPagesPolicy._validators,
                   "top_p_mass": lambda f, v: check_float(f, v, 0.0, 1.0, lo_open=True)}

    def select(self, ctx: SelectContext) -> Selection:
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        M = ctx.block_tables.shape[1]
        n = ctx.num_pages()
        group = ctx.query.shape[1] // ctx.num_kv_heads
        mass = true_page_mass(ctx, n, M)
        B, H, _ = mass.shape
        forced = forced_pages(n, M, p.sink_pages)[:, None, :].expand(B, H, M)
        keys = mass.masked_fill(forced, float("inf"))
        need = top_p_pages((mass / group).clamp_min(0.0), keys, p.top_p_mass)
        nf = forced[:, 0].sum(-1)[:, None]
        hi = p.budget.pages(ctx.seq_lens, ctx.block_size)[:, None]
        k = torch.minimum(torch.maximum(need.clamp(max=hi), nf), n[:, None])
        kmax = max(p.budget.max_pages(M, ctx.block_size), p.sink_pages + 1)
        return Selection(take_top(keys, k, kmax), budget_pages=k)
