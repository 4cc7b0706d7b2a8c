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

`layer_stats` computes all of it for the whole batch in one op of static shape
(`kernels.selection_stats`: one CUDA kernel on a GPU, tensor ops elsewhere; no host sync,
no per-sequence loop), so it runs inside a captured CUDA graph; the
recorder (selection/recorder.py) copies the packed result to the host one step late.
`step_summary` turns one step's host copy into a `SelectionSummary` (per-layer means)
with array reductions; its `detail` (selection/detail.py) holds every record as
columns. None of this runs unless statistics are on: it costs a dense attention pass
per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from .. import kernels
from ..kernels.stats_reference import candidate_plane, page_mask
from .base import SelectContext, Selection
from .detail import CHANNELS, C, SelectionDetail

_METRICS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall",
            "bound_violations", "entropy", "budget_pages", "tier_hits", "tier_misses", "bytes_moved")
_MEANS = ("pages_selected", "context_pages", "mass_recall", "oracle_mass", "selection_recall", "budget_pages")
# The packed layer result (kernels/stats_reference.py): the per-head CHANNELS, then four
# page planes of width M: selected (0/1), oracle (0/1), page bound scores, stage-1
# candidates (0/1, NaN: none).


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
    # every record of the step, columnar (selection/detail.py); None in the recorder's
    # history and in records old enough to have dropped it
    detail: SelectionDetail | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "detail"}


def layer_stats(ctx: SelectContext, sel: Selection, rtol: float = 1e-5) -> torch.Tensor:
    """float32 [B, Hkv, C + 4M]: the statistics of one layer for every row of the batch
    (CHANNELS, then the selected, oracle, score and candidate planes): the ops API's
    `selection_stats` (one CUDA kernel on a GPU; kernels/stats_reference.py is the spec)."""
    return kernels.selection_stats(ctx.query, ctx.k_cache, ctx.meta, ctx.block_tables, ctx.seq_lens, ctx.scale,
                                   sel.scores, sel.page_indices, sel.candidates, sel.entropy, sel.budget_pages,
                                   rtol, ctx.kv_scales)


def selection_only(ctx: SelectContext, sel: Selection) -> torch.Tensor:
    """The packed layout with only what the tiers need (pages selected, context pages
    and the selected plane) when statistics are off: no dense attention pass."""
    n = ctx.num_pages()
    B, H, M = n.shape[0], ctx.num_kv_heads, ctx.block_tables.shape[1]
    chosen = page_mask(sel.page_indices, n, H, M)
    per_head = torch.full((B, H, C), float("nan"), device=n.device)
    per_head[..., 0] = chosen.sum(-1).float()
    per_head[..., 1] = n[:, None].float()
    blank = torch.zeros(B, H, 2 * M, device=n.device)
    return torch.cat([per_head, chosen.float(), blank, candidate_plane(sel.candidates, n, H, M)], dim=-1)


def step_summary(step: int, policy: str, layers: list[int], per_head: np.ndarray, tiers: list | None,
                 detail: SelectionDetail | None = None) -> SelectionSummary:
    """The per-layer summary of one step from its per-head channels, float32 numpy
    [L, B, H, C] (the real rows only), with array reductions over (row, head); `tiers`
    per layer a list of kv.tiers.TierAccess per row, or None."""
    ph = per_head.astype(np.float64)
    L, B, H = ph.shape[:3]
    r = B * H
    ch = {m: ph[..., i].reshape(L, r) for i, m in enumerate(CHANNELS)}
    cols: dict[str, tuple] = {m: tuple((ch[m].sum(-1) / max(r, 1)).tolist()) for m in _MEANS}
    cols["bound_violations"] = tuple(int(v) for v in ch["bound_violations"].sum(-1).tolist())
    ent = ch["entropy"]
    n_ent = (~np.isnan(ent)).sum(-1)
    ent_sum = np.nansum(ent, axis=-1)
    cols["entropy"] = tuple(float(s / k) if k else math.nan for s, k in zip(ent_sum.tolist(), n_ent.tolist()))
    for m in ("hits", "misses", "bytes_moved"):
        cols[m if m == "bytes_moved" else f"tier_{m}"] = tuple(
            0 if tiers is None else sum(getattr(a, m) for a in tiers[li]) for li in range(L))
    return SelectionSummary(step=step, policy=policy, layers=tuple(layers), records=(r,) * L,
                            detail=detail, **cols)


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
