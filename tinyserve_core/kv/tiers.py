"""Two-tier page residency for query-aware selection: a capped fast tier per
(sequence, layer) and an unbounded slow tier behind it.

Model (what is counted, exactly):
* A page here is one block of one layer, K and V of every kv-head: moving it costs
  `2 * block_size * num_kv_heads * head_dim * itemsize` bytes.
* At most `capacity_pages` pages of each (sequence, layer) are resident in the fast
  tier. A page is written on the fast tier (prefill, decode), so a new page arrives
  resident; after a prefill only the newest `capacity_pages` pages are assumed to stay.
* Each decode step the selected pages (union over kv-heads) must be resident: a
  selected page already resident is a hit; one that is not is a miss and is fetched
  (bytes moved += page bytes). If residency then exceeds the cap, pages are evicted:
  first pages not selected this step, by LRU (least recently selected) or by LFU
  (lowest decayed selection frequency: every access multiplies all frequencies by
  `decay` and adds 1 to the selected pages; ties fall back to LRU). The page being
  written is never evicted. If a step selects more pages than the cap, the excess is
  streamed through and evicted again right away.
* Hit rate = hits / (hits + misses) = selected pages already resident / selected pages.

What is physically moved: nothing. This is exact residency *accounting*; the pages
stay in the one KV pool and no host<->device copy is issued. The bytes-moved figure
is what a real offloading engine would have to transfer under this policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

TIER_POLICIES = ("lru", "lfu")


@dataclass(slots=True)
class TierAccess:
    """One (sequence, layer) access: counts over the unique selected pages, and the
    residency just before the access (bool [n_pages]) for per-head accounting."""
    hits: int
    misses: int
    bytes_moved: int
    evictions: int
    resident_before: np.ndarray


@dataclass(slots=True)
class TierCounters:
    hits: int = 0
    misses: int = 0
    bytes_moved: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")


class _Residency:
    __slots__ = ("resident", "last_used", "freq", "n")

    def __init__(self):
        self.resident = np.zeros(0, dtype=bool)
        self.last_used = np.zeros(0, dtype=np.int64)
        self.freq = np.zeros(0, dtype=np.float64)
        self.n = 0


class TieredPageCache:
    def __init__(self, capacity_pages: int, policy: str = "lru", decay: float = 0.9):
        self.capacity_pages, self.policy, self.decay = self._validate(capacity_pages, policy, decay)
        self._state: dict[int, dict[int, _Residency]] = {}
        self._clock = 0
        self.totals = TierCounters()

    @staticmethod
    def _validate(capacity_pages, policy, decay):
        if isinstance(capacity_pages, bool) or not isinstance(capacity_pages, int) or capacity_pages < 1:
            raise ConfigError("tier_pages", f"must be an integer >= 1, got {capacity_pages!r}")
        if not isinstance(policy, str) or policy.lower() not in TIER_POLICIES:
            raise ConfigError("tier_policy", f"must be one of {', '.join(TIER_POLICIES)}, got {policy!r}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not (0.0 < decay <= 1.0):
            raise ConfigError("tier_decay", f"must be in (0, 1], got {decay!r}")
        return capacity_pages, policy.lower(), float(decay)

    def update(self, capacity_pages=None, policy=None, decay=None) -> None:
        """Retune live; residency already held is trimmed at the next access."""
        cap, pol, dec = self._validate(
            self.capacity_pages if capacity_pages is None else capacity_pages,
            self.policy if policy is None else policy,
            self.decay if decay is None else decay)
        self.capacity_pages, self.policy, self.decay = cap, pol, dec

    def forget(self, seq_id: int) -> None:
        self._state.pop(seq_id, None)

    def reset_counters(self) -> None:
        self.totals = TierCounters()

    def resident_pages(self, seq_id: int, layer: int) -> np.ndarray:
        st = self._state.get(seq_id, {}).get(layer)
        return np.zeros(0, dtype=np.int64) if st is None else np.flatnonzero(st.resident[: st.n])

    def access(self, seq_id: int, layer: int, num_pages: int, selected, page_bytes: int) -> TierAccess:
        """Account one step's selected pages (logical page numbers, any order,
        duplicates ignored) of a (sequence, layer) whose context has `num_pages`."""
        sel = np.unique(np.asarray(selected, dtype=np.int64))
        if sel.size and (sel[0] < 0 or sel[-1] >= num_pages):
            raise ValueError(f"selected pages out of range [0, {num_pages}): {sel.tolist()}")
        self._clock += 1
        st = self._grow(seq_id, layer, num_pages)
        n = st.n
        before = st.resident[:n].copy()
        hits = int(before[sel].sum())
        misses = int(sel.size - hits)
        if self.policy == "lfu":
            st.freq[:n] *= self.decay
            st.freq[sel] += 1.0
        st.resident[sel] = True
        st.last_used[sel] = self._clock
        evicted = self._evict(st, sel)
        acc = TierAccess(hits, misses, misses * int(page_bytes), evicted, before)
        t = self.totals
        t.hits += hits
        t.misses += misses
        t.bytes_moved += acc.bytes_moved
        t.evictions += evicted
        return acc

    def _grow(self, seq_id: int, layer: int, n: int) -> _Residency:
        layers = self._state.setdefault(seq_id, {})
        st = layers.get(layer)
        if st is None or st.n > n:  # first sight (after prefill) or recomputed
            st = layers[layer] = _Residency()
            st.resident = np.zeros(n, dtype=bool)
            st.freq = np.zeros(n, dtype=np.float64)
            # prefill wrote pages in order; the newest ones stay, older ones spilled (LRU order)
            st.last_used = self._clock - (n - np.arange(n, dtype=np.int64))
            st.resident[max(0, n - self.capacity_pages):] = True
            st.n = n
            return st
        if n > st.n:  # pages written this step arrive on the fast tier
            extra = n - st.n
            st.resident = np.concatenate([st.resident, np.ones(extra, dtype=bool)])
            st.freq = np.concatenate([st.freq, np.zeros(extra)])
            st.last_used = np.concatenate([st.last_used, np.full(extra, self._clock - 1, dtype=np.int64)])
            st.n = n
        return st

    def _evict(self, st: _Residency, sel: np.ndarray) -> int:
        n = st.n
        over = int(st.resident[:n].sum()) - self.capacity_pages
        if over <= 0:
            return 0
        chosen = np.zeros(n, dtype=bool)
        chosen[sel] = True
        cand = np.flatnonzero(st.resident[:n])
        cand = cand[cand != n - 1]  # the page being written stays
        # not-selected pages go first, then by policy order
        if self.policy == "lru":
            order = np.lexsort((st.last_used[cand], chosen[cand]))
        else:
            order = np.lexsort((st.last_used[cand], st.freq[cand], chosen[cand]))
        victims = cand[order[:over]]
        st.resident[victims] = False
        return int(victims.size)
