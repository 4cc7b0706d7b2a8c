"""Selection statistics: how good each step's page choice was, against the truth.

For every (sequence, layer, kv-head) of a decode step the true attention of the
query over the whole context is computed and compared with the selected pages:
* mass recall: true softmax mass on the selected pages (mean over the group's query
  heads) - the share of the dense attention output the sparse one keeps;
* oracle pages: the k pages of highest true mass, k = pages selected;
  selection recall = |oracle & selected| / k; oracle mass = their true mass, the
  best mass recall any choice of k pages could reach;
* bound violations: tokens whose logit exceeds their page's bound by more than the
  float32 rounding of the two dot products (tolerance `rtol * scale * sum|q||k|max`);
  the bound is exact, so this must be 0;
* the policy's chosen budget and entropy, and the tier hits/misses of the head.

Each record becomes an `events.PageSelection` in the sink, and feeds a compact
per-layer `SelectionSummary` per step for the GUI's time plots. None of this runs
unless statistics are switched on: it costs a dense attention pass per layer."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields

import torch

from .. import kernels
from ..observe.events import EventSink, PageSelection
from .base import SelectContext, Selection
from .true_attention import attention_logits, context_keys, page_mass

_METRICS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall",
            "bound_violations", "entropy", "budget_pages", "tier_hits", "tier_misses", "bytes_moved")
_MEANS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall", "budget_pages")


@dataclass(frozen=True, slots=True)
class SelectionSummary:
    """One decode step, per layer (index i describes `layers[i]`). Means are over
    the (sequence, kv-head) records of the layer; counts are sums. Entropy is NaN
    for policies without a mass estimate; tier counts are 0 without tiers."""
    step: int
    policy: str
    layers: tuple[int, ...]
    records: tuple[int, ...]
    pages_selected: tuple[float, ...]
    context_pages: tuple[float, ...]
    mass_recall: tuple[float, ...]
    oracle_mass: tuple[float, ...]   # the best mass recall any choice of as many pages gets
    selection_recall: tuple[float, ...]
    bound_violations: tuple[int, ...]
    entropy: tuple[float, ...]
    budget_pages: tuple[float, ...]
    tier_hits: tuple[int, ...]
    tier_misses: tuple[int, ...]
    bytes_moved: tuple[int, ...]

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _LayerAcc:
    __slots__ = ("records", "sums", "n_entropy", "n_tier")

    def __init__(self):
        self.records = 0
        self.sums = dict.fromkeys(_METRICS, 0.0)
        self.n_entropy = 0
        self.n_tier = 0


class SelectionStats:
    def __init__(self, sink: EventSink | None = None, rtol: float = 1e-5, history: int = 4096):
        self.sink = sink
        self.rtol = rtol
        self.history: deque[SelectionSummary] = deque(maxlen=history)
        self._layers: dict[int, _LayerAcc] = {}
        self._step = 0
        self._policy = ""

    def record(self, ctx: SelectContext, sel: Selection, policy: str, tier=None) -> None:
        """`tier`: per sequence a kv.tiers.TierAccess, or None without tiers."""
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
        cands = None if sel.candidates is None else sel.candidates.cpu()
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
            ta = None if tier is None else tier[b]
            if ta is not None:
                acc.n_tier += 1
                acc.sums["tier_hits"] += ta.hits
                acc.sums["tier_misses"] += ta.misses
                acc.sums["bytes_moved"] += ta.bytes_moved
                resident = torch.from_numpy(ta.resident_before)
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
                if self.sink is not None and self.sink.enabled:
                    pages = torch.nonzero(chosen[h]).flatten()
                    hits = misses = None
                    if ta is not None:
                        hits = int(resident[pages].sum())
                        misses = kh - hits
                    self.sink.emit(PageSelection(
                        seq_id=int(seq_id), layer=ctx.layer_idx, kv_head=h, num_pages=kh,
                        pages=tuple(pages.tolist()), policy=policy,
                        scores=tuple(scores[b, h, :n].tolist()),
                        oracle_pages=tuple(sorted(orc.tolist())),
                        selection_recall=sel_rec, mass_recall=float(mass_rec[h]),
                        oracle_mass=float(mass[h, orc].sum()),
                        bound_violations=int(viol[h]), entropy=ent, budget_pages=bud,
                        tier_hits=hits, tier_misses=misses,
                        candidate_pages=None if cands is None else _row_pages(cands[b, h])))

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


def _row_pages(row: torch.Tensor) -> tuple[int, ...]:
    """Sorted logical pages of one [S] index row, -1 padding dropped."""
    return tuple(sorted(int(x) for x in row.tolist() if x >= 0))


def _selected_mask(pidx: torch.Tensor | None, b: int, H: int, n: int) -> torch.Tensor:
    if pidx is None:
        return torch.ones(H, n, dtype=torch.bool)
    m = torch.zeros(H, n + 1, dtype=torch.bool)
    row = pidx[b].long()
    m.scatter_(1, torch.where(row >= 0, row, n), True)
    return m[:, :n]


def summarize_history(history) -> dict[int, dict[str, float]]:
    """Per layer, the record-weighted means of a run of summaries (the eval harness
    and the GUI's totals)."""
    out: dict[int, dict[str, float]] = {}
    tot: dict[int, dict[str, float]] = {}
    for s in history:
        for i, li in enumerate(s.layers):
            t = tot.setdefault(li, {"records": 0, **dict.fromkeys(_METRICS, 0.0), "ent_w": 0})
            r = s.records[i]
            t["records"] += r
            for m in _MEANS:
                t[m] += getattr(s, m)[i] * r
            if not math.isnan(s.entropy[i]):
                t["entropy"] += s.entropy[i] * r
                t["ent_w"] += r
            for m in ("bound_violations", "tier_hits", "tier_misses", "bytes_moved"):
                t[m] += getattr(s, m)[i]
    for li, t in tot.items():
        r = max(t["records"], 1)
        row = {m: t[m] / r for m in _MEANS}
        row["entropy"] = t["entropy"] / t["ent_w"] if t["ent_w"] else math.nan
        for m in ("bound_violations", "tier_hits", "tier_misses", "bytes_moved"):
            row[m] = int(t[m])
        row["records"] = int(t["records"])
        out[li] = row
    return out
