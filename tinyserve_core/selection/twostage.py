"""`twostage`: the bound picks candidates, estimated attention picks the pages
(after Twilight, NeurIPS 2025: a candidate selector wrapped by top-p on estimated attention).

Stage 1 ranks pages by the exact bounding-box bound (`kernels.page_scores`, as quest)
and keeps `candidates` x the budget of them; with `candidate_top_p` set, fewer: the
fewest whose bound softmax (as `adaptive` reads it) reaches that mass. The bound is
good at ruling pages out but poor at ordering the survivors (eval selection: the page
with the most true attention sat 3rd to 126th by bound), so stage 2 re-ranks the
candidates by their estimated attention: every candidate token's logit from the
layer's int8 (or int4) key copy quantised on its page's own min/max
(`kernels.page_estimates`), softmaxed over the candidates' tokens and averaged over the
group's query heads. It keeps the budget's worth of pages (`estimate_top_p` 0) or the
fewest whose estimated mass reaches `estimate_top_p` (the adaptive form, the budget its
cap). Forced pages (the page being written, sink pages) always stay and count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import kernels
from ..errors import ConfigError
from .base import (EXEMPT, Policy, SelectContext, Selection, budget_validator, dense_layers_validator,
                   forced_pages, take_top, tokens_per_page, top_p_pages)
from .params import Budget, check_float, check_int


@dataclass(frozen=True, slots=True)
class TwoStageParams:
    budget: Budget = Budget(fraction=0.125)  # pages kept (fixed form) or the most kept (adaptive form)
    candidates: float = 4.0        # stage-1 candidates, as a multiple of the budget
    candidate_top_p: float = 0.0   # 0: always the multiple; else the fewest reaching this bound mass
    estimate_top_p: float = 0.0        # 0: keep the budget; else the fewest reaching this estimated mass
    quant_bits: int = 8
    sink_pages: int = 0
    dense_layers: int = 2


class TwoStagePolicy(Policy):
    name = "twostage"
    # Eager steps: the quantised copy is allocated and refreshed on the host when the
    # policy first meets a cache, which a captured graph would skip.
    graph_safe = False
    Params = TwoStageParams
    _validators = {
        "budget": budget_validator,
        "candidates": lambda f, v: check_float(f, v, 1.0, 1024.0),
        "candidate_top_p": lambda f, v: check_float(f, v, 0.0, 1.0),
        "estimate_top_p": lambda f, v: check_float(f, v, 0.0, 1.0),
        "quant_bits": lambda f, v: _check_bits(f, v),
        "sink_pages": lambda f, v: check_int(f, v, 0),
        "dense_layers": dense_layers_validator,
    }

    @property
    def quant_key_bits(self) -> int:
        return self.params.quant_bits

    def select(self, ctx: SelectContext) -> Selection:
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        M = ctx.block_tables.shape[1]
        if p.budget.covers(M, ctx.block_size) and p.estimate_top_p in (0.0, 1.0):
            return Selection(None)  # keeps everything: exact dense, decided on the host
        if ctx.qkeys is None:
            raise ValueError("twostage needs the layer's quantised keys (SelectContext.qkeys)")
        scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                     ctx.scale, ctx.block_size)  # [B, Hkv, M], -inf past the context
        B, H, _ = scores.shape
        n = ctx.num_pages()
        forced = forced_pages(n, M, p.sink_pages)[:, None, :].expand(B, H, M)
        nf = forced[:, 0].sum(-1)[:, None]
        budget = torch.minimum(torch.maximum(p.budget.pages(ctx.seq_lens, ctx.block_size)[:, None], nf),
                               n[:, None]).expand(B, H)
        # stage 1: candidates by the bound (forced pages first)
        keys1 = scores.masked_fill(forced, float("inf"))
        bmax = max(p.budget.max_pages(M, ctx.block_size), p.sink_pages + 1)
        cmax = min(M, math.ceil(p.candidates * bmax - 1e-9))
        n_cand = torch.ceil(budget.double() * p.candidates - 1e-9).long()
        if p.candidate_top_p > 0.0:
            logits = scores + tokens_per_page(ctx.seq_lens, M, ctx.block_size).float().log()[:, None, :]
            need = top_p_pages(torch.softmax(logits, dim=-1), keys1, p.candidate_top_p)
            n_cand = torch.minimum(n_cand, torch.maximum(need, budget))
        n_cand = torch.minimum(n_cand, n[:, None])
        cand = take_top(keys1, n_cand, cmax)                      # [B, H, C] ascending, -1 pad
        # stage 2: estimated attention of the candidates' tokens
        lse = kernels.page_estimates(ctx.query, ctx.qkeys, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                     cand, ctx.scale)            # [B, Hq, C]
        C = cand.shape[-1]
        mass = torch.nan_to_num(torch.softmax(lse, dim=-1), nan=0.0).view(B, H, -1, C).mean(2)
        valid = cand >= 0
        cand_forced = torch.gather(forced, 2, cand.long().clamp(min=0)) & valid
        keys2 = mass.masked_fill(~valid, float("-inf")).masked_fill(cand_forced, float("inf"))
        k = budget
        if p.estimate_top_p > 0.0:
            k = torch.minimum(torch.maximum(top_p_pages(mass, keys2, p.estimate_top_p), nf), budget)
        k = torch.minimum(k, n_cand)
        kept = take_top(keys2, k, min(bmax, C)).long()            # positions in `cand`, ascending
        pages = torch.gather(cand, 2, kept.clamp(min=0)).masked_fill(kept < 0, -1)
        return Selection(pages.to(torch.int32), scores=scores, budget_pages=k, candidates=cand)


def _check_bits(field: str, value) -> int:
    v = check_int(field, value, 4, 8)
    if v not in (4, 8):
        raise ConfigError(field, f"must be 8 or 4, got {v}")
    return v
