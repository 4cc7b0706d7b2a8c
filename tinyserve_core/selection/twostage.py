"""`twostage`: the bound picks candidates, estimated attention picks the pages
(after Twilight, NeurIPS 2025: a candidate selector wrapped by top-p on estimated attention).

Stage 1 ranks pages by the bounding-box bound and keeps `candidates` x the budget of them.
It reads the int8 copy of the page bounds kept beside the key copy
(`kernels.page_scores_copy`, bound_copy_reference.py): rounded outward, so still a bound,
at half the bytes of the fp16 min/max rows quest reads, which are half of a quest layer's
traffic at long context; a candidate set only needs the looser ranking (`bound_copy` off:
quest's own bound, `kernels.page_scores`); with `candidate_top_p` set, fewer: the
fewest whose bound softmax (as `adaptive` reads it) reaches that mass. The bound is
good at ruling pages out but poor at ordering the survivors (eval selection: the page
with the most true attention sat 3rd to 126th by bound), so stage 2 re-ranks the
candidates by their estimated attention: every candidate token's logit from the
layer's int8 (or int4) key copy quantised on its page's own min/max
(`kernels.page_estimates`), softmaxed over the candidates' tokens and averaged over the
group's query heads. It keeps the budget's worth of pages (`estimate_top_p` 0) or the
fewest whose estimated mass reaches `estimate_top_p` (the adaptive form, the budget its
cap). Forced pages (the page being written, sink pages) always stay and count.
Both selections are ops (`kernels.twostage_candidates`, `kernels.twostage_keep`; torch spec
in kernels/twostage_reference.py, fused CUDA kernels on a GPU) that decide on the device
with output widths fixed on the host, so the decode step is captured in a CUDA graph."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import kernels
from ..errors import ConfigError
from .base import EXEMPT, Policy, SelectContext, Selection, budget_validator, dense_layers_validator
from .params import Budget, check_bool, check_float, check_int


@dataclass(frozen=True, slots=True)
class TwoStageParams:
    budget: Budget = Budget(fraction=0.125)  # pages kept (fixed form) or the most kept (adaptive form)
    candidates: float = 4.0        # stage-1 candidates, as a multiple of the budget
    candidate_top_p: float = 0.0   # 0: always the multiple; else the fewest reaching this bound mass
    estimate_top_p: float = 0.0        # 0: keep the budget; else the fewest reaching this estimated mass
    quant_bits: int = 4            # int4 keys: the accuracy of int8 at half the copy (docs/BENCHMARKS.md)
    bound_copy: bool = True        # stage 1 over the int8 bound copy (else quest's fp16 bound)
    sink_pages: int = 0
    dense_layers: int = 2


class TwoStagePolicy(Policy):
    name = "twostage"
    # Captured with the decode step: the selections run on the device (kernels.twostage_*),
    # and the quantised copy is made current on the host before a step (PageSelector.prepare).
    Params = TwoStageParams
    reads_key_copy = True
    _validators = {
        "budget": budget_validator,
        "candidates": lambda f, v: check_float(f, v, 1.0, 1024.0),
        "candidate_top_p": lambda f, v: check_float(f, v, 0.0, 1.0),
        "estimate_top_p": lambda f, v: check_float(f, v, 0.0, 1.0),
        "quant_bits": lambda f, v: _check_bits(f, v),
        "bound_copy": lambda f, v: check_bool(f, v),
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
        bs = ctx.block_size
        if p.bound_copy:
            if ctx.qbounds is None:
                raise ValueError("twostage's bound_copy needs the layer's int8 bound copy (SelectContext.qbounds)")
            scores = kernels.page_scores_copy(ctx.query, ctx.qbounds, ctx.block_tables, ctx.seq_lens,
                                              ctx.scale, bs)    # [B, Hkv, M], -inf past the context
        else:
            scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens, ctx.scale, bs)
        budget = p.budget.pages(ctx.seq_lens, bs)               # [B], clamped by the kernels
        # host-side widths from the shapes and parameters alone: nothing waits on the device
        bmax = max(p.budget.max_pages(M, bs), p.sink_pages + 1)
        cmax = min(M, math.ceil(p.candidates * bmax - 1e-9))
        cand = kernels.twostage_candidates(scores, ctx.seq_lens, budget, bs, p.candidates,
                                           p.candidate_top_p, p.sink_pages, cmax)   # [B, H, C] ascending
        lse = kernels.page_estimates(ctx.query, ctx.qkeys, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                     cand, ctx.scale)           # [B, Hq, C]
        pages, k = kernels.twostage_keep(lse, cand, ctx.seq_lens, budget, bs, p.estimate_top_p,
                                         p.sink_pages, min(bmax, cand.shape[-1]))
        return Selection(pages, scores=scores, budget_pages=k, candidates=cand)


def _check_bits(field: str, value) -> int:
    v = check_int(field, value, 4, 8)
    if v not in (4, 8):
        raise ConfigError(field, f"must be 8 or 4, got {v}")
    return v
