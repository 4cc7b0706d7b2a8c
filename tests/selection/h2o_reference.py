"""The h2o policy as it was before it ran batched: one sequence at a time, with host
syncs. The batched version (tinyserve_core/selection/h2o.py) must choose the same pages;
this is the test's reference, not product code."""

from __future__ import annotations

import math

import torch

from tinyserve_core.selection.base import EXEMPT, SelectContext, Selection
from tinyserve_core.selection.h2o import H2OParams, H2OPolicy
from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass


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


class ReferenceH2O(H2OPolicy):
    """The old per-sequence select; the knobs (Params, validators) are the policy's."""
    name = "h2o-reference"

    def __init__(self, **params):
        super().__init__(**params)
        self._state: dict[int, dict[int, _SeqState]] = {}

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
