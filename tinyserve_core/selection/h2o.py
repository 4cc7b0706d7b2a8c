"""`h2o`: heavy hitters + a recent window (H2O, Zhang et al. 2023), at page granularity.

Per (sequence, layer, kv-head) the policy keeps a set of live pages. Each step the
new page joins it; the attention of the current query over the live pages (query
heads of the group summed) is added to each page's accumulator; then, while the set
is over budget, the live page with the least accumulated attention outside the
recent window and the sinks is evicted - for good, as in H2O, so its accumulator
stops growing. Only decode queries are seen: on a sequence's first decode step every
prompt page is live and that one query decides the first evictions (H2O proper also
accumulates over the prompt's queries).

It needs real attention weights, computed here from q and the cache for the whole batch
at once (no host sync): an accuracy baseline, not a fast path. `forget(seq_id)` drops a
finished sequence's state. A budget that covers the whole table attends densely and
leaves the accumulators as they were."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import (EXEMPT, Policy, SelectContext, Selection, budget_validator, dense_layers_validator)
from .params import Budget, check_int
from .true_attention import batched_page_mass


@dataclass(frozen=True, slots=True)
class H2OParams:
    budget: Budget = Budget(fraction=0.125)
    recent_pages: int = 0       # recent window in pages; 0 = half the budget, as in H2O
    sink_pages: int = 0
    dense_layers: int = 2


class H2OPolicy(Policy):
    name = "h2o"
    graph_safe = False  # per-sequence state lives in Python dicts (gathered, not synced)
    reads_keys = True   # the true attention mass of each page
    Params = H2OParams
    _validators = {
        "budget": budget_validator,
        "recent_pages": lambda f, v: check_int(f, v, 0),
        "sink_pages": lambda f, v: check_int(f, v, 0),
        "dense_layers": dense_layers_validator,
    }

    def __init__(self, **params):
        # seq -> layer -> (accumulated mass float32 [H, W], alive bool [H, W], pages seen long [])
        self._state: dict[int, dict[int, tuple]] = {}
        super().__init__(**params)

    def forget(self, seq_id: int) -> None:
        self._state.pop(seq_id, None)

    def tracked_sequences(self) -> list[int]:
        return sorted(self._state)

    def select(self, ctx: SelectContext) -> Selection:
        """The whole batch in tensor ops: each sequence's state is gathered into
        [B, H, M] tensors, updated and evicted there, and stored back; nothing waits
        for the device (the old per-sequence version synced several times a row)."""
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        B, H = len(ctx.seq_ids), ctx.num_kv_heads
        M = ctx.block_tables.shape[1]
        bs = ctx.block_size
        n = ctx.num_pages()
        k = torch.minimum(p.budget.pages(ctx.seq_lens, bs).clamp(min=1), n)       # [B]
        if p.budget.covers(M, bs):   # decided on the host: nothing is ever evicted, exact dense
            return Selection(None, budget_pages=k[:, None].expand(B, H))
        acc, alive = self._gather(ctx.seq_ids, ctx.layer_idx, H, M, n)
        valid = (torch.arange(M, device=n.device)[None, :] < n[:, None])[:, None, :]  # [B, 1, M]
        live = alive & valid
        acc = acc + batched_page_mass(ctx, live)
        alive = alive & ~self._evictions(acc, live, n, k, p)
        self._store(ctx.seq_ids, ctx.layer_idx, acc, alive, n)
        live = alive & valid
        # Pages alive: at most max(k, recent window + sinks) per row, a host-side bound.
        kmax = p.budget.max_pages(M, bs)
        recent = p.recent_pages if p.recent_pages > 0 else math.ceil(kmax / 2)
        S = min(M, max(kmax, recent + p.sink_pages + 1))
        idx = torch.arange(M, device=n.device).expand(B, H, M).masked_fill(~live, M)
        idx = torch.sort(idx, dim=-1).values[..., :S]
        return Selection(idx.masked_fill(idx == M, -1).to(torch.int32), budget_pages=k[:, None].expand(B, H))

    def _gather(self, seq_ids, layer: int, H: int, M: int, n: torch.Tensor):
        accs, alives, seen = [], [], []
        dev = n.device
        for seq_id in seq_ids:
            st = self._state.get(seq_id, {}).get(layer)
            if st is None:
                st = (torch.zeros(H, M, device=dev), torch.ones(H, M, dtype=torch.bool, device=dev),
                      torch.zeros((), dtype=torch.long, device=dev))
            a, al, s = st
            if a.shape[1] < M:   # the table grew wider: new pages arrive alive, unattended
                a = torch.nn.functional.pad(a, (0, M - a.shape[1]))
                al = torch.nn.functional.pad(al, (0, M - al.shape[1]), value=True)
            accs.append(a[:, :M])
            alives.append(al[:, :M])
            seen.append(s)
        acc, alive, seen = torch.stack(accs), torch.stack(alives), torch.stack(seen)
        # A context shorter than what was seen was recomputed (a preemption): start over.
        reset = (seen > n)[:, None, None]
        return acc.masked_fill(reset, 0.0), alive | reset

    def _store(self, seq_ids, layer: int, acc, alive, n) -> None:
        for b, seq_id in enumerate(seq_ids):
            self._state.setdefault(seq_id, {})[layer] = (acc[b], alive[b], n[b])

    @staticmethod
    def _evictions(acc, live, n, k, p: H2OParams) -> torch.Tensor:
        """bool [B, H, M]: live pages to drop, least accumulated attention first, outside
        the recent window and the sinks, until each row is within its budget."""
        B, H, M = live.shape
        over = live.sum(-1) - k[:, None]                                           # [B, H]
        recent = torch.full_like(k, p.recent_pages) if p.recent_pages > 0 else (k + 1) // 2
        pos = torch.arange(M, device=live.device)
        protected = (pos[None, :] >= (n - recent)[:, None]) | (pos[None, :] < p.sink_pages)   # [B, M]
        eligible = live & ~protected[:, None, :]
        order = torch.argsort(acc.masked_fill(~eligible, float("inf")), dim=-1, stable=True)
        rank = torch.empty_like(order).scatter_(-1, order, pos.expand_as(order))
        return eligible & (rank < over.clamp(min=0)[..., None])
