"""The h2o policy as it was before it ran batched (one sequence at a time, with host
syncs): the reference the batched version must match. Not product code.

`h2o`: heavy hitters + a recent window (H2O, Zhang et al. 2023), at page granularity.

Per (sequence, layer, kv-head) the policy keeps a set of live pages. Each step the
new page joins it; the attention of the current query over the live pages (query
heads of the group summed) is added to each page's accumulator; then, while the set
is over budget, the live page with the least accumulated attention outside the
recent window and the sinks is evicted - for good, as in H2O, so its accumulator
stops growing. Only decode queries are seen: on a sequence's first decode step every
prompt page is live and that one query decides the first evictions (H2O proper also
accumulates over the prompt's queries).

It needs real attention weights, computed here from q and the cache: an accuracy
baseline, not a fast path. `forget(seq_id)` drops a finished sequence's state."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tinyserve_core.selection.base import (EXEMPT, Policy, SelectContext, Selection, budget_validator,
                                           dense_layers_validator)
from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass
from tinyserve_core.selection.params import Budget, check_int


@dataclass(frozen=True, slots=True)
class H2OParams:
    budget: Budget = Budget(fraction=0.125)
    recent_pages: int = 0       # recent window in pages; 0 = half the budget, as in H2O
    sink_pages: int = 0
    dense_layers: int = 2


class _SeqState:
    __slots__ = ("acc", "alive", "n_seen")

    def __init__(self, hkv: int, n: int, device):
        self.acc = torch.zeros(hkv, n, dtype=torch.float32, device=device)
        self.alive = torch.ones(hkv, n, dtype=torch.bool, device=device)
        self.n_seen = n

    def grow(self, n: int) -> None:
        extra = n - self.n_seen
        if extra > 0:
            h = self.acc.shape[0]
            self.acc = torch.cat([self.acc, self.acc.new_zeros(h, extra)], dim=1)
            self.alive = torch.cat([self.alive, self.alive.new_ones(h, extra)], dim=1)
            self.n_seen = n


class ReferenceH2O(Policy):
    name = "h2o-reference"
    graph_safe = False  # per-sequence work on the host every step
    Params = H2OParams
    _validators = {
        "budget": budget_validator,
        "recent_pages": lambda f, v: check_int(f, v, 0),
        "sink_pages": lambda f, v: check_int(f, v, 0),
        "dense_layers": dense_layers_validator,
    }

    def __init__(self, **params):
        self._state: dict[int, dict[int, _SeqState]] = {}
        super().__init__(**params)

    def forget(self, seq_id: int) -> None:
        self._state.pop(seq_id, None)

    def tracked_sequences(self) -> list[int]:
        return sorted(self._state)

    def _state_for(self, seq_id: int, layer: int, hkv: int, n: int, device) -> _SeqState:
        layers = self._state.setdefault(seq_id, {})
        st = layers.get(layer)
        if st is None or st.n_seen > n:  # new, or recomputed after preemption
            st = layers[layer] = _SeqState(hkv, n, device)
        st.grow(n)
        return st

    def select(self, ctx: SelectContext) -> Selection:
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        B, H = len(ctx.seq_ids), ctx.num_kv_heads
        group = ctx.query.shape[1] // H
        budgets = p.budget.pages(ctx.seq_lens, ctx.block_size).tolist()
        rows, kept_all, budget_out = [], True, []
        for b, seq_id in enumerate(ctx.seq_ids):
            L = int(ctx.seq_lens[b])
            n = (L + ctx.block_size - 1) // ctx.block_size
            st = self._state_for(seq_id, ctx.layer_idx, H, n, ctx.query.device)
            keys = context_keys(ctx.k_cache, ctx.block_tables[b], L)
            logits = attention_logits(ctx.query[b], keys, ctx.scale)
            live = st.alive[:, :n].repeat_interleave(group, dim=0)
            mass = page_mass(logits, ctx.block_size, live).view(H, group, n).sum(1)
            st.acc[:, :n] += mass
            k = min(max(budgets[b], 1), n)
            self._evict(st, n, k, p)
            kept_all &= bool(st.alive[:, :n].all())
            rows.append(st.alive[:, :n])
            budget_out.append(k)
        budget = torch.tensor(budget_out, device=ctx.query.device)[:, None].expand(B, H)
        if kept_all:
            return Selection(None, budget_pages=budget)
        return Selection(_pad_rows(rows), budget_pages=budget)

    @staticmethod
    def _evict(st: _SeqState, n: int, k: int, p: H2OParams) -> None:
        alive = st.alive[:, :n]
        over = alive.sum(-1) - k  # [H]
        if bool((over <= 0).all()):
            return
        recent = p.recent_pages if p.recent_pages > 0 else math.ceil(k / 2)
        pos = torch.arange(n, device=alive.device)
        protected = (pos >= n - recent) | (pos < p.sink_pages)
        eligible = alive & ~protected[None, :]
        key = st.acc[:, :n].masked_fill(~eligible, float("inf"))
        order = torch.argsort(key, dim=-1)  # least attended first
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=alive.device).expand_as(order))
        drop = eligible & (rank < over.clamp(min=0)[:, None])
        st.alive[:, :n] = alive & ~drop


def _pad_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Per-sequence bool [H, n_b] page masks -> int32 [B, H, S] ascending, -1 padded."""
    H = rows[0].shape[0]
    S = max(int(r.sum(-1).max()) for r in rows)
    out = torch.full((len(rows), H, S), -1, dtype=torch.int32, device=rows[0].device)
    for b, r in enumerate(rows):
        n = r.shape[1]
        idx = torch.arange(n, device=r.device).expand(H, n).masked_fill(~r, n)
        idx = torch.sort(idx, dim=-1).values[:, :S]
        out[b, :, : idx.shape[1]] = idx.masked_fill(idx == n, -1).to(torch.int32)
    return out
