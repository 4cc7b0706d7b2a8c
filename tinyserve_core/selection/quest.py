"""`quest`: query-aware top-k pages (Quest, Tang et al. 2024).

Each page is ranked by its bounding-box upper bound on the attention logit,
`kernels.page_scores` (query heads of a GQA group aggregated by max), and the top
pages within the budget are kept. The page being written and the optional sink pages
are always kept and count against the budget; the first `dense_layers` layers attend
densely, as Quest does (their attention is too flat for the bound to rank well)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernels
from .base import (EXEMPT, Policy, SelectContext, Selection, budget_validator, dense_layers_validator,
                   forced_pages, take_top)
from .params import Budget, check_int


@dataclass(frozen=True, slots=True)
class QuestParams:
    budget: Budget = Budget(fraction=0.125)
    sink_pages: int = 0
    dense_layers: int = 2


class QuestPolicy(Policy):
    name = "quest"
    Params = QuestParams
    _validators = {
        "budget": budget_validator,
        "sink_pages": lambda f, v: check_int(f, v, 0),
        "dense_layers": dense_layers_validator,
    }

    def select(self, ctx: SelectContext) -> Selection:
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        M = ctx.block_tables.shape[1]
        if p.budget.covers(M, ctx.block_size):  # decided on the host: no sync, exact dense
            return Selection(None)
        scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                     ctx.scale, ctx.block_size)  # [B, Hkv, M]
        B, H, _ = scores.shape
        n = ctx.num_pages()
        forced = forced_pages(n, M, p.sink_pages)
        k = torch.maximum(p.budget.pages(ctx.seq_lens, ctx.block_size), forced.sum(-1))
        k = torch.minimum(k, n)
        budget = k[:, None].expand(B, H)
        kmax = max(p.budget.max_pages(M, ctx.block_size), p.sink_pages + 1)
        keys = scores.masked_fill(forced[:, None, :], float("inf"))
        return Selection(take_top(keys, budget, kmax), scores=scores, budget_pages=budget)
