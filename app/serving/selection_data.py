"""PageSelection events folded into what the Cache selection view draws: a
pages x decode-steps matrix for one (sequence, layer, kv-head), and per-layer
recall and fast-tier hit-rate series. Runs in the worker thread."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from tinyserve_core.observe import events as ev
from tinyserve_core.observe.record import StepRecord


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
    def __init__(self, capacity: int = 128, max_seqs: int = 64, series_len: int = 2048):
        self.capacity = capacity
        self.max_seqs = max_seqs
        # seq -> {(layer, head): deque[(step, num_pages, pages, scores, oracle, candidates)]}
        self._hist: OrderedDict[int, dict[tuple[int, int], deque]] = OrderedDict()
        self._policy = "dense"
        self._series: deque = deque(maxlen=series_len)   # (step, {layer: (rec, mass)}, tier)
        self._layers_seen: set[int] = set()
        self._version = 0
        self._cache: tuple | None = None      # (key, version, view)

    def ingest(self, rec: StepRecord) -> None:
        per_layer: dict[int, list[tuple[float, float]]] = {}
        hits = misses = 0
        any_sel = False
        for e in rec.events:
            if not isinstance(e, ev.PageSelection):
                continue
            any_sel = True
            self._policy = e.policy
            by_key = self._hist.get(e.seq_id)
            if by_key is None:
                by_key = self._hist[e.seq_id] = {}
                while len(self._hist) > self.max_seqs:
                    self._hist.popitem(last=False)
            else:
                self._hist.move_to_end(e.seq_id)
            dq = by_key.get((e.layer, e.kv_head))
            if dq is None:
                dq = by_key[(e.layer, e.kv_head)] = deque(maxlen=self.capacity)
            # num_pages counts the selected pages; the context is what was scored
            ctx = len(e.scores) if e.scores is not None else (max(e.pages) + 1 if e.pages else 0)
            dq.append((rec.step, ctx, e.pages, e.scores, e.oracle_pages, e.candidate_pages))
            self._layers_seen.add(e.layer)
            if e.selection_recall is not None or e.mass_recall is not None:
                per_layer.setdefault(e.layer, []).append(
                    (np.nan if e.selection_recall is None else e.selection_recall,
                     np.nan if e.mass_recall is None else e.mass_recall))
            if e.tier_hits is not None:
                hits += e.tier_hits
                misses += e.tier_misses or 0
        if any_sel:
            means = {l: tuple(np.nanmean(np.array(v, np.float64), axis=0)) for l, v in per_layer.items()
                     if len(v)}
            tier = hits / (hits + misses) if hits + misses else np.nan
            self._series.append((rec.step, means, tier))
            self._version += 1

    def sequences(self) -> dict[int, str]:
        """Sequences with selection data, newest first."""
        return {s: f"seq {s}" for s in reversed(self._hist)}

    def default_key(self) -> tuple[int, int, int] | None:
        if not self._hist:
            return None
        # of the sequences seen lately, the one with the longest history: the newest
        # arrival has a single column and would make a poor default
        recent = list(self._hist)[-16:]
        seq = max(recent, key=lambda q: (max(len(d) for d in self._hist[q].values()), q))
        layer, head = min(self._hist[seq])
        return seq, layer, head

    def view(self, key: tuple[int, int, int] | None) -> SelectionView | None:
        if key is None or key[0] not in self._hist:
            key = self.default_key()
            if key is None:
                return None
        seq, layer, head = key
        by_key = self._hist[seq]
        if (layer, head) not in by_key:
            layer, head = min(by_key)
            key = (seq, layer, head)
        if self._cache is not None and self._cache[:2] == (key, self._version):
            return self._cache[2]
        view = self._build(key)
        self._cache = (key, self._version, view)
        return view

    def _build(self, key: tuple[int, int, int]) -> SelectionView:
        seq, layer, head = key
        by_key = self._hist[seq]
        entries = list(by_key[(layer, head)])
        S = len(entries)
        P = max((e[1] for e in entries), default=1)
        scores = np.full((P, S), np.nan, np.float32)
        selected = np.zeros((P, S), bool)
        oracle = np.zeros((P, S), bool)
        steps = np.zeros(S, np.int64)
        npages = np.zeros(S, np.int64)
        has_oracle = False
        cands = None
        for j, (step, n, pages, sc, orc, cand) in enumerate(entries):
            steps[j] = step
            npages[j] = n
            if sc is not None:
                scores[: len(sc), j] = sc
            if pages:
                selected[np.asarray(pages, np.int64), j] = True
            if cand is not None:
                if cands is None:
                    cands = np.zeros((P, S), bool)
                cands[np.asarray(cand, np.int64), j] = True
            if orc is not None:
                has_oracle = True
                if orc:
                    oracle[np.asarray(orc, np.int64), j] = True
        layers_seq = sorted({l for l, _ in by_key})
        heads_seq = sorted({h for _, h in by_key})
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
