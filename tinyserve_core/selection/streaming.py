"""`streaming`: attention sinks + a recent window (StreamingLLM, Xiao et al. 2023),
at page granularity. Query-blind: every kv-head keeps the first `sink_pages` pages
and the most recent pages that fill the rest of the budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (EXEMPT, Policy, SelectContext, Selection, budget_validator, dense_layers_validator,
                   forced_pages, take_top)
from .params import Budget, check_int


@dataclass(frozen=True, slots=True)
class StreamingParams:
    budget: Budget = Budget(fraction=0.125)
    sink_pages: int = 1
    dense_layers: int = 2


class StreamingPolicy(Policy):
    name = "streaming"
    Params = StreamingParams
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
        if p.budget.covers(M, ctx.block_size):
            return Selection(None)
        n = ctx.num_pages()
        B, H = n.shape[0], ctx.num_kv_heads
        forced = forced_pages(n, M, p.sink_pages)
        k = torch.minimum(torch.maximum(p.budget.pages(ctx.seq_lens, ctx.block_size), forced.sum(-1)), n)
        budget = k[:, None].expand(B, H)
        # recency is the key: later pages rank higher, sinks above all, padding never
        pos = torch.arange(M, device=n.device, dtype=torch.float32)[None, :].expand(B, M)
        pos = pos.masked_fill(pos >= n[:, None].float(), float("-inf"))
        pos = pos.masked_fill(forced, float("inf"))
        keys = pos[:, None, :].expand(B, H, M)
        kmax = max(p.budget.max_pages(M, ctx.block_size), p.sink_pages + 1)
        return Selection(take_top(keys, budget, kmax), budget_pages=budget)
