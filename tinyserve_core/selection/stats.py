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

`layer_stats` computes all of it for the whole batch with tensor ops of static shape
(no host sync, no per-sequence loop), so it runs inside a captured CUDA graph; the
recorder (selection/recorder.py) copies the packed result to the host one step late.
`StepStats` turns one step's host copy into a `SelectionSummary` (per-layer means)
and the `events.PageSelection` of each record. None of this runs unless statistics
are on: it costs a dense attention pass per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .. import kernels
from ..observe.events import EventSink, PageSelection
from .base import SelectContext, Selection
from .true_attention import batched_logits

_METRICS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall",
            "bound_violations", "entropy", "budget_pages", "tier_hits", "tier_misses", "bytes_moved")
_MEANS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall", "budget_pages")
# Per-head channels of the packed layer result, then four page planes of width M:
# selected (0/1), oracle (0/1), page bound scores, stage-1 candidates (0/1, NaN: none).
CHANNELS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall",
            "bound_violations", "entropy", "budget_pages")
C = len(CHANNELS)
PLANES = 4   # selected, oracle, scores, candidates


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


def selected_mask(page_indices: torch.Tensor | None, num_pages: torch.Tensor, H: int, M: int) -> torch.Tensor:
    """bool [B, H, M]: the pages each (sequence, kv-head) attends (every page of the
    context when `page_indices` is None)."""
    valid = torch.arange(M, device=num_pages.device)[None, :] < num_pages[:, None]      # [B, M]
    if page_indices is None:
        return valid[:, None, :].expand(-1, H, -1)
    B = num_pages.shape[0]
    idx = page_indices.long()
    m = torch.zeros(B, H, M + 1, dtype=torch.bool, device=num_pages.device)
    m.scatter_(2, torch.where(idx >= 0, idx, M), True)
    return m[:, :, :M] & valid[:, None, :]


def layer_stats(ctx: SelectContext, sel: Selection, rtol: float = 1e-5) -> torch.Tensor:
    """float32 [B, Hkv, C + 4M]: the statistics of one layer for every row of the batch
    (CHANNELS, then the selected, oracle, score and candidate planes). Static shapes only: the
    context is gathered to the block table's full width and masked by its length."""
    q = ctx.query.float()
    B, Hq, D = q.shape
    H = ctx.num_kv_heads
    G = Hq // H
    tables = ctx.block_tables.long()
    M = tables.shape[1]
    bs = ctx.block_size
    T = M * bs
    n = ctx.num_pages()
    dev = q.device
    qg = q.view(B, H, G, D)
    logits = batched_logits(ctx)                                                  # [B, H, G, T]
    mass = torch.softmax(logits, dim=-1).view(B, H, G, M, bs).sum(-1).mean(2)   # [B, H, M]
    page_valid = (torch.arange(M, device=dev)[None, :] < n[:, None])[:, None, :]  # [B, 1, M]

    chosen = selected_mask(sel.page_indices, n, H, M)
    k = chosen.sum(-1)                                                            # [B, H]
    mass_rec = (mass * chosen).sum(-1)
    # The oracle: the k highest-mass pages (pages past the context rank last).
    order = torch.argsort(mass.masked_fill(~page_valid, -1.0), dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(M, device=dev).expand_as(order))
    oracle = rank < k[..., None]
    oracle_mass = (mass * oracle).sum(-1)
    kf = k.float()
    sel_rec = torch.where(k > 0, (oracle & chosen).sum(-1).float() / kf.clamp(min=1), 1.0)

    scores = sel.scores
    if scores is None:
        scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens, ctx.scale, bs)
    scores = scores.float()                                                       # [B, H, M], -inf past ctx
    m = ctx.meta[tables].float()                                                  # [B, M, 2, H, D]
    mag = torch.maximum(m[:, :, 0].abs(), m[:, :, 1].abs())                       # [B, M, H, D]
    tol = torch.einsum("bhgd,bmhd->bhgm", qg.abs(), mag) * abs(ctx.scale) * rtol + 1e-30
    lim = (scores[:, :, None, :] + tol)[..., None].expand(B, H, G, M, bs).reshape(B, H, G, T)
    violations = (logits > lim).sum((2, 3))                                       # -inf logits never count

    nan = torch.full((B, H), float("nan"), device=dev)
    entropy = nan if sel.entropy is None else sel.entropy.float().expand(B, H)
    budget = kf if sel.budget_pages is None else sel.budget_pages.float().expand(B, H)
    per_head = torch.stack([kf, n[:, None].expand(B, H).float(), mass_rec, oracle_mass, sel_rec,
                            violations.float(), entropy, budget], dim=-1)         # [B, H, C]
    return torch.cat([per_head, chosen.float(), oracle.float(),
                      scores.masked_fill(~page_valid, float("nan")), candidate_plane(sel, n, H, M)], dim=-1)


def candidate_plane(sel: Selection, n: torch.Tensor, H: int, M: int) -> torch.Tensor:
    """float32 [B, H, M]: 1 on stage-1 candidates of a two-stage selector; NaN when the
    policy has no candidate stage (so the host can tell "none" from "an empty set")."""
    if sel.candidates is None:
        return torch.full((n.shape[0], H, M), float("nan"), device=n.device)
    return selected_mask(sel.candidates, n, H, M).float()


def selection_only(ctx: SelectContext, sel: Selection) -> torch.Tensor:
    """The packed layout with only what the tiers need (pages selected, context pages
    and the selected plane) when statistics are off: no dense attention pass."""
    n = ctx.num_pages()
    B, H, M = n.shape[0], ctx.num_kv_heads, ctx.block_tables.shape[1]
    chosen = selected_mask(sel.page_indices, n, H, M)
    per_head = torch.full((B, H, C), float("nan"), device=n.device)
    per_head[..., 0] = chosen.sum(-1).float()
    per_head[..., 1] = n[:, None].float()
    blank = torch.zeros(B, H, 2 * M, device=n.device)
    return torch.cat([per_head, chosen.float(), blank, candidate_plane(sel, n, H, M)], dim=-1)


class StepStats:
    """Host side of one step: `packed` float32 numpy [layers, B, H, C + 4M] (the real
    rows only), `tiers` per layer a list of kv.tiers.TierAccess per row or None."""

    def __init__(self, step: int, policy: str, layers: list[int], seq_ids: list[int], packed: np.ndarray):
        self.step, self.policy, self.layers, self.seq_ids, self.packed = step, policy, layers, seq_ids, packed
        self.M = (packed.shape[-1] - C) // PLANES

    def selected(self, li: int, b: int) -> np.ndarray:
        """bool [H, M] of layer position li, row b."""
        return self.packed[li, b, :, C:C + self.M] > 0.5

    def summary(self, tiers: list | None) -> SelectionSummary:
        cols: dict[str, list] = {m: [] for m in _METRICS}
        records = []
        for li in range(len(self.layers)):
            ph = self.packed[li, :, :, :C].astype(np.float64)   # [B, H, C]
            r = ph.shape[0] * ph.shape[1]
            records.append(r)
            for m in _MEANS:
                cols[m].append(float(ph[..., CHANNELS.index(m)].sum()) / max(r, 1))
            cols["bound_violations"].append(int(ph[..., CHANNELS.index("bound_violations")].sum()))
            ent = ph[..., CHANNELS.index("entropy")]
            ent = ent[~np.isnan(ent)]
            cols["entropy"].append(float(ent.mean()) if ent.size else math.nan)
            acc = None if tiers is None else tiers[li]
            cols["tier_hits"].append(0 if acc is None else sum(a.hits for a in acc))
            cols["tier_misses"].append(0 if acc is None else sum(a.misses for a in acc))
            cols["bytes_moved"].append(0 if acc is None else sum(a.bytes_moved for a in acc))
        return SelectionSummary(step=self.step, policy=self.policy, layers=tuple(self.layers),
                                records=tuple(records), **{m: tuple(v) for m, v in cols.items()})

    def emit(self, sink: EventSink, tiers: list | None) -> None:
        """One PageSelection per (sequence, layer, kv-head), as the GUI's heatmaps read.
        Arrays become Python lists once per layer (slicing lists is cheap; indexing
        numpy element by element is not): this runs for every record of every step."""
        M = self.M
        policy = self.policy
        for li, layer in enumerate(self.layers):
            block = self.packed[li]
            B, H = block.shape[0], block.shape[1]
            per_head = block[:, :, :C].tolist()
            scores = block[:, :, C + 2 * M:C + 3 * M].tolist()
            sel_pages, sel_at = _page_lists(block[:, :, C:C + M] > 0.5)
            orc_pages, orc_at = _page_lists(block[:, :, C + M:C + 2 * M] > 0.5)
            cand_plane = block[:, :, C + 3 * M:]
            has_cands = M > 0 and not np.isnan(cand_plane[..., 0]).all()
            cand_pages, cand_at = _page_lists(cand_plane > 0.5) if has_cands else (None, None)
            for b, seq_id in enumerate(self.seq_ids):
                ta = None if tiers is None else tiers[li][b]
                seq_id = int(seq_id)
                for h in range(H):
                    k_, n_, mass, orc_mass, rec, viol, ent, bud = per_head[b][h]
                    r = b * H + h
                    pages = sel_pages[sel_at[r]:sel_at[r + 1]]
                    hits = misses = None
                    if ta is not None:
                        hits = int(ta.resident_before[pages].sum())
                        misses = int(k_) - hits
                    sink.emit(PageSelection(
                        seq_id=seq_id, layer=layer, kv_head=h, num_pages=int(k_), pages=tuple(pages),
                        policy=policy, scores=tuple(scores[b][h][:int(n_)]),
                        oracle_pages=tuple(orc_pages[orc_at[r]:orc_at[r + 1]]),
                        selection_recall=rec, mass_recall=mass, oracle_mass=orc_mass,
                        bound_violations=int(viol), entropy=None if ent != ent else ent,
                        budget_pages=int(bud), tier_hits=hits, tier_misses=misses,
                        candidate_pages=tuple(cand_pages[cand_at[r]:cand_at[r + 1]]) if has_cands else None))


def _page_lists(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """bool [B, H, M] -> (page numbers of every row concatenated, row offsets [B*H+1])."""
    counts = mask.sum(-1).ravel()
    at = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=at[1:])
    return np.nonzero(mask.reshape(counts.size, -1))[1].tolist(), at.tolist()


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
