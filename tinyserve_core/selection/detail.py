"""One decode step's page selections, columnar: numpy arrays indexed [layer, row,
kv-head(, page)] instead of one event object per (sequence, layer, kv-head).

The recorder (selection/recorder.py) builds one `SelectionDetail` per step from the
pinned host copy of the packed statistics with a handful of vectorised slices, so the
step path never loops over records in Python; the views that need a single record
(the GUI's heatmap, the eval's tier replay) index the arrays themselves. It travels
with its step's `SelectionSummary` (`summary.detail`) in `StepRecord.selection`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-head channels of the packed layer result, in order, then PLANES page planes of width M:
# selected, oracle, scores, candidates (the op's spec, kernels/stats_reference.py, owns them).
from ..kernels.stats_reference import C, CHANNELS, PLANES

_CH = {name: i for i, name in enumerate(CHANNELS)}


@dataclass(frozen=True, eq=False, slots=True)
class SelectionDetail:
    """Every (sequence, layer, kv-head) record of one step. Page planes are `P` wide,
    P = the step's longest context in pages; a row's own context is
    `context_pages[l, b, h]` pages (scores are NaN past it, the bool planes False)."""
    policy: str
    layers: np.ndarray                  # int64 [L] model layer of each index
    seq_ids: np.ndarray                 # int64 [B] sequence of each row
    per_head: np.ndarray                # float32 [L, B, H, C] the CHANNELS
    selected: np.ndarray                # bool [L, B, H, P]
    oracle: np.ndarray                  # bool [L, B, H, P] the k highest-mass pages, k = selected
    scores: np.ndarray                  # float32 [L, B, H, P] page bounds
    candidates: np.ndarray | None = None   # bool [L, B, H, P] a two-stage policy's stage 1
    tier_hits: np.ndarray | None = None    # int64 [L, B, H] with tiers on
    tier_misses: np.ndarray | None = None

    @classmethod
    def from_packed(cls, policy: str, layers, seq_ids, packed: np.ndarray,
                    tiers: list | None = None) -> SelectionDetail:
        """From the recorder's host copy, float32 [L, B, H, C + 4M]; `tiers` per layer
        a list of kv.tiers.TierAccess per row (or None). The planes are cropped to the
        longest context and copied, so the pinned buffer is free again."""
        M = (packed.shape[-1] - C) // PLANES
        per_head = np.ascontiguousarray(packed[..., :C])
        P = int(per_head[..., _CH["context_pages"]].max()) if per_head.size else 0

        def plane(k: int) -> np.ndarray:   # a view: only what a record keeps is copied
            return packed[..., C + k * M:C + k * M + P]
        cand = plane(3)
        has_cands = cand.size > 0 and not np.isnan(cand[..., 0]).all()
        selected = plane(0) > 0.5
        hits = misses = None
        if tiers is not None:
            resident = np.zeros(selected.shape[:2] + (P,), bool)      # [L, B, P] before the access
            for li, row in enumerate(tiers):
                for b, acc in enumerate(row):
                    r = acc.resident_before[:P]
                    resident[li, b, :r.shape[0]] = r
            hits = (selected & resident[:, :, None, :]).sum(-1)
            misses = per_head[..., _CH["pages_selected"]].astype(np.int64) - hits
        return cls(policy, np.asarray(layers, np.int64), np.asarray(seq_ids, np.int64), per_head, selected,
                   plane(1) > 0.5, np.ascontiguousarray(plane(2)), cand > 0.5 if has_cands else None, hits, misses)

    def channel(self, name: str) -> np.ndarray:
        """float32 [L, B, H]: one of CHANNELS."""
        return self.per_head[..., _CH[name]]

    @property
    def num_heads(self) -> int:
        return int(self.per_head.shape[2])

    @property
    def num_records(self) -> int:
        L, B, H = self.per_head.shape[:3]
        return L * B * H

    def pages(self, li: int, b: int, h: int, plane: str = "selected") -> np.ndarray:
        """int64 page numbers of one record's plane (selected, oracle, candidates)."""
        m = getattr(self, plane)
        return np.zeros(0, np.int64) if m is None else np.flatnonzero(m[li, b, h])
