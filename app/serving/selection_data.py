"""The steps' columnar selection records (StepRecord.selection, selection/detail.py)
folded into what the Cache selection view draws: a pages x decode-steps matrix for one
(sequence, layer, kv-head), and per-layer recall and fast-tier hit-rate series. Runs
in the worker (the engine host): ingesting is per step and per sequence, never per
record; the matrix is cut from the arrays when a view is asked for."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from tinyserve_core.observe.record import StepRecord
from tinyserve_core.selection.detail import CHANNELS

_RECALLS = [CHANNELS.index("selection_recall"), CHANNELS.index("mass_recall")]


@dataclass
class SelectionView:
    key: tuple[int, int, int]                 # (seq_id, layer, kv_head)
    policy: str
    steps: np.ndarray                         # int64 [S] engine step of each column
    scores: np.ndarray                        # float32 [P, S], NaN = no score / past context
    selected: np.ndarray                      # bool [P, S]
    oracle: np.ndarray                        # bool [P, S] (all False without stats)
    has_oracle: bool
    num_pages: np.ndarray                     # int64 [S] context pages (scored) at each step
    layers: list[int]                         # layers and heads seen for this sequence
    heads: list[int]
    series_steps: np.ndarray                  # int64 [T]
    selection_recall: np.ndarray              # float32 [T, L] mean over seqs/heads, NaN = none
    mass_recall: np.ndarray                   # float32 [T, L]
    tier_hit_rate: np.ndarray                 # float32 [T]
    series_layers: list[int]
    candidates: np.ndarray | None = None      # bool [P, S]: stage-1 candidates (two-stage policies only)


class SelectionHistory:
    """Per sequence, the newest `capacity` steps it was decoded in, each as a reference
    to the step's columnar records (selection/detail.py) and its row in them: ingesting
    a step is O(batch) with no copy; a view slices the arrays of one key."""

    def __init__(self, capacity: int = 128, max_seqs: int = 64, series_len: int = 2048):
        self.capacity = capacity
        self.max_seqs = max_seqs
        self._hist: OrderedDict[int, deque] = OrderedDict()   # seq -> deque[(step, detail, row)]
        self._policy = "dense"
        self._series: deque = deque(maxlen=series_len)   # (step, {layer: (rec, mass)}, tier)
        self._layers_seen: set[int] = set()
        self._version = 0
        self._cache: tuple | None = None      # (key, version, view)

    def ingest(self, rec: StepRecord) -> None:
        for summary in rec.selection:
            d = summary.detail
            if d is None:
                continue
            self._policy = d.policy
            hist = self._hist
            for b, seq in enumerate(d.seq_ids.tolist()):
                dq = hist.get(seq)
                if dq is None:
                    dq = hist[seq] = deque(maxlen=self.capacity)
                else:
                    hist.move_to_end(seq)
                dq.append((rec.step, d, b))
            while len(hist) > self.max_seqs:
                hist.popitem(last=False)
            layers = d.layers.tolist()
            self._layers_seen.update(layers)
            # per layer, the mean over rows and heads of each recall (NaN where none is known)
            vals = d.per_head[..., _RECALLS]                                  # [L, B, H, 2]
            known = ~np.isnan(vals)
            n = known.sum((1, 2))
            mean = np.where(n > 0, np.where(known, vals, 0.0).sum((1, 2)) / np.maximum(n, 1), np.nan)
            means = {l: (r, m) for l, (r, m) in zip(layers, mean.tolist())}
            tier = np.nan
            if d.tier_hits is not None:
                hits, misses = int(d.tier_hits.sum()), int(d.tier_misses.sum())
                tier = hits / (hits + misses) if hits + misses else np.nan
            self._series.append((rec.step, means, tier))
            self._version += 1

    def _keys(self, seq: int) -> set[tuple[int, int]]:
        """(layer, kv-head) pairs recorded for `seq` in its kept steps."""
        shapes = {(tuple(d.layers.tolist()), d.num_heads) for d in {id(d): d for _, d, _ in self._hist[seq]}.values()}
        return {(l, h) for layers, heads in shapes for l in layers for h in range(heads)}

    def sequences(self) -> dict[int, str]:
        """Sequences with selection data, newest first."""
        return {s: f"seq {s}" for s in reversed(self._hist)}

    def default_key(self) -> tuple[int, int, int] | None:
        if not self._hist:
            return None
        # of the sequences seen lately, the one with the longest history: the newest
        # arrival has a single column and would make a poor default
        recent = list(self._hist)[-16:]
        seq = max(recent, key=lambda q: (len(self._hist[q]), q))
        layer, head = min(self._keys(seq))
        return seq, layer, head

    def view(self, key: tuple[int, int, int] | None) -> SelectionView | None:
        if key is None or key[0] not in self._hist:
            key = self.default_key()
            if key is None:
                return None
        seq, layer, head = key
        keys = self._keys(seq)
        if (layer, head) not in keys:
            layer, head = min(keys)
            key = (seq, layer, head)
        if self._cache is not None and self._cache[:2] == (key, self._version):
            return self._cache[2]
        view = self._build(key)
        self._cache = (key, self._version, view)
        return view

    def _build(self, key: tuple[int, int, int]) -> SelectionView:
        seq, layer, head = key
        keys = self._keys(seq)
        # the steps whose records hold this layer (a live change of dense_layers can drop it)
        entries = []
        for step, d, b in self._hist[seq]:
            at = np.flatnonzero(d.layers == layer)
            if at.size and head < d.num_heads:
                entries.append((step, d, int(at[0]), b))
        S = len(entries)
        ctx = [int(d.per_head[li, b, head, 1]) for _, d, li, b in entries]   # context pages
        P = max(ctx, default=1) or 1
        scores = np.full((P, S), np.nan, np.float32)
        selected = np.zeros((P, S), bool)
        oracle = np.zeros((P, S), bool)
        steps = np.array([e[0] for e in entries], np.int64)
        npages = np.array(ctx, np.int64)
        cands = None
        for j, ((_, d, li, b), n) in enumerate(zip(entries, ctx)):
            scores[:n, j] = d.scores[li, b, head, :n]
            selected[:n, j] = d.selected[li, b, head, :n]
            oracle[:n, j] = d.oracle[li, b, head, :n]
            if d.candidates is not None:
                if cands is None:
                    cands = np.zeros((P, S), bool)
                cands[:n, j] = d.candidates[li, b, head, :n]
        has_oracle = S > 0
        layers_seq = sorted({l for l, _ in keys})
        heads_seq = sorted({h for _, h in keys})
        series_layers = sorted(self._layers_seen)
        T = len(self._series)
        L = len(series_layers)
        lpos = {l: i for i, l in enumerate(series_layers)}
        s_steps = np.zeros(T, np.int64)
        rec = np.full((T, L), np.nan, np.float32)
        mass = np.full((T, L), np.nan, np.float32)
        tier = np.full(T, np.nan, np.float32)
        for i, (step, means, t) in enumerate(self._series):
            s_steps[i] = step
            tier[i] = t
            for l, (r, m) in means.items():
                rec[i, lpos[l]] = r
                mass[i, lpos[l]] = m
        return SelectionView(key, self._policy, steps, scores, selected, oracle, has_oracle,
                             npages, layers_seq, heads_seq, s_steps, rec, mass, tier,
                             series_layers, cands)
