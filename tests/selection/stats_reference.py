"""The statistics as they were computed before they moved to the device: one
sequence and one head at a time on the host. The device version (selection/stats.py)
must give the same numbers; this is the test's reference, not product code."""

from __future__ import annotations

import math
from collections import deque

import torch

from tinyserve_core import kernels
from types import SimpleNamespace

import numpy as np

from tinyserve_core.selection.base import SelectContext, Selection
from tinyserve_core.selection.stats import _MEANS, _METRICS, SelectionSummary
from tinyserve_core.selection.true_attention import attention_logits, context_keys, page_mass


class _LayerAcc:
    __slots__ = ("records", "sums", "n_entropy", "n_tier")

    def __init__(self):
        self.records = 0
        self.sums = dict.fromkeys(_METRICS, 0.0)
        self.n_entropy = 0
        self.n_tier = 0


class ReferenceStats:
    def __init__(self, keep_records: bool = False, rtol: float = 1e-5, history: int = 4096):
        self.records: list[SimpleNamespace] | None = [] if keep_records else None   # per record, in order
        self.rtol = rtol
        self.history: deque[SelectionSummary] = deque(maxlen=history)
        self._layers: dict[int, _LayerAcc] = {}
        self._step = 0
        self._policy = ""

    def record(self, ctx: SelectContext, sel: Selection, policy: str) -> None:
        self._policy = policy
        scores = sel.scores
        if scores is None:
            scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                         ctx.scale, ctx.block_size)
        scores = scores.float().cpu()
        H = ctx.num_kv_heads
        group = ctx.query.shape[1] // H
        pidx = None if sel.page_indices is None else sel.page_indices.cpu()
        budget = None if sel.budget_pages is None else sel.budget_pages.cpu()
        entropy = None if sel.entropy is None else sel.entropy.float().cpu()
        acc = self._layers.setdefault(ctx.layer_idx, _LayerAcc())
        for b, seq_id in enumerate(ctx.seq_ids):
            L = int(ctx.seq_lens[b])
            bs = ctx.block_size
            n = (L + bs - 1) // bs
            keys = context_keys(ctx.k_cache, ctx.block_tables[b], L)
            q = ctx.query[b].float()
            logits = attention_logits(q, keys, ctx.scale)                     # [Hq, L]
            mass = page_mass(logits, bs).view(H, group, n).mean(1).cpu()      # [H, n]
            chosen = _selected_mask(pidx, b, H, n)                            # [H, n]
            viol = self._violations(ctx, b, q, logits, scores[b, :, :n]).cpu()  # [H]
            k = chosen.sum(-1)
            mass_rec = (mass * chosen).sum(-1)
            oracle = torch.topk(mass, int(k.max()), dim=-1).indices if n else None
            for h in range(H):
                kh = int(k[h])
                orc = oracle[h, :kh]
                sel_rec = float(chosen[h, orc].sum()) / kh if kh else 1.0
                ent = None if entropy is None else float(entropy[b, h])
                bud = kh if budget is None else int(budget[b, h])
                acc.records += 1
                s = acc.sums
                s["pages_selected"] += kh
                s["context_pages"] += n
                s["mass_recall"] += float(mass_rec[h])
                s["oracle_mass"] += float(mass[h, orc].sum())
                s["selection_recall"] += sel_rec
                s["bound_violations"] += int(viol[h])
                s["budget_pages"] += bud
                if ent is not None:
                    s["entropy"] += ent
                    acc.n_entropy += 1
                if self.records is not None:
                    pages = torch.nonzero(chosen[h]).flatten()
                    self.records.append(SimpleNamespace(
                        seq_id=int(seq_id), layer=ctx.layer_idx, kv_head=h, num_pages=kh,
                        pages=tuple(pages.tolist()), policy=policy,
                        scores=tuple(scores[b, h, :n].tolist()),
                        oracle_pages=tuple(sorted(orc.tolist())),
                        selection_recall=sel_rec, mass_recall=float(mass_rec[h]),
                        oracle_mass=float(mass[h, orc].sum()),
                        bound_violations=int(viol[h]), entropy=ent, budget_pages=bud))

    def _violations(self, ctx: SelectContext, b: int, q: torch.Tensor, logits: torch.Tensor,
                    bounds: torch.Tensor) -> torch.Tensor:
        """int [Hkv]: (query head, token) pairs of the group whose logit beats the bound."""
        H = ctx.num_kv_heads
        hq, L = logits.shape
        bs = ctx.block_size
        n = bounds.shape[-1]
        ids = ctx.block_tables[b, :n].long()
        m = ctx.meta[ids].float()                                    # [n, 2, H, D]
        mag = torch.maximum(m[:, 0].abs(), m[:, 1].abs())            # [n, H, D]
        mag = mag.repeat_interleave(hq // H, dim=1)                  # [n, Hq, D]
        tol = torch.einsum("hd,nhd->hn", q.abs(), mag) * abs(ctx.scale) * self.rtol + 1e-30
        bound = bounds.to(logits.device).repeat_interleave(hq // H, dim=0)  # [Hq, n]
        lim = (bound + tol).repeat_interleave(bs, dim=1)[:, :L]
        over = (logits > lim).sum(-1)                                # [Hq]
        return over.view(H, hq // H).sum(-1)

    def take_summary(self) -> SelectionSummary | None:
        """The summary of everything recorded since the last call (one decode step
        when the engine calls it after each step); None if nothing was recorded."""
        if not self._layers:
            return None
        layers = sorted(self._layers)
        cols: dict[str, list] = {m: [] for m in _METRICS}
        for li in layers:
            a = self._layers[li]
            r = max(a.records, 1)
            for m in _MEANS:
                cols[m].append(a.sums[m] / r)
            cols["bound_violations"].append(int(a.sums["bound_violations"]))
            cols["entropy"].append(a.sums["entropy"] / a.n_entropy if a.n_entropy else math.nan)
            for m in ("tier_hits", "tier_misses", "bytes_moved"):
                cols[m].append(int(a.sums[m]))
        out = SelectionSummary(step=self._step, policy=self._policy, layers=tuple(layers),
                               records=tuple(self._layers[li].records for li in layers),
                               **{m: tuple(v) for m, v in cols.items()})
        self._layers = {}
        self._step += 1
        self.history.append(out)
        return out


def _selected_mask(pidx: torch.Tensor | None, b: int, H: int, n: int) -> torch.Tensor:
    if pidx is None:
        return torch.ones(H, n, dtype=torch.bool)
    m = torch.zeros(H, n + 1, dtype=torch.bool)
    row = pidx[b].long()
    m.scatter_(1, torch.where(row >= 0, row, n), True)
    return m[:, :n]


def detail_records(detail) -> list[SimpleNamespace]:
    """The columnar records of a step (selection/detail.py) one by one, in the order
    the reference records them (layer, row, kv-head), with the reference's fields."""
    if detail is None:
        return []
    out = []
    ch = lambda name: detail.channel(name)   # noqa: E731
    L, B, H = detail.per_head.shape[:3]
    for li in range(L):
        for b in range(B):
            for h in range(H):
                n = int(ch("context_pages")[li, b, h])
                ent = float(ch("entropy")[li, b, h])
                out.append(SimpleNamespace(
                    seq_id=int(detail.seq_ids[b]), layer=int(detail.layers[li]), kv_head=h,
                    num_pages=int(ch("pages_selected")[li, b, h]), policy=detail.policy,
                    pages=tuple(detail.pages(li, b, h).tolist()),
                    scores=tuple(detail.scores[li, b, h, :n].tolist()),
                    oracle_pages=tuple(detail.pages(li, b, h, "oracle").tolist()),
                    candidate_pages=(None if detail.candidates is None
                                     else tuple(detail.pages(li, b, h, "candidates").tolist())),
                    selection_recall=float(ch("selection_recall")[li, b, h]),
                    mass_recall=float(ch("mass_recall")[li, b, h]),
                    oracle_mass=float(ch("oracle_mass")[li, b, h]),
                    bound_violations=int(ch("bound_violations")[li, b, h]),
                    entropy=None if np.isnan(ent) else ent,
                    budget_pages=int(ch("budget_pages")[li, b, h]),
                    tier_hits=None if detail.tier_hits is None else int(detail.tier_hits[li, b, h]),
                    tier_misses=None if detail.tier_misses is None else int(detail.tier_misses[li, b, h])))
    return out
