"""The reading half of CacheModel (a mixin over its arrays): counts, the forest's
depth and roots (kept at store time, recomputed here only when removals or returning
parents made them stale), the BlockMap and Churn the views paint, block details and
tokens, and the engine's BlocksSnapshot contract. Every read first applies the queued
array writes (`_flush`)."""

from __future__ import annotations

import msgspec
import numpy as np

from ..kv.stats import BlocksSnapshot
from .cache_views import BlockDetail, BlockMap, Churn, churn_series, depth_and_root


class CacheReads:
    @property
    def blocks_live(self) -> int:
        return self._live_count

    def live_by_rank(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (r, _), d in self._maps.items():
            out[r] = out.get(r, 0) + len(d)
        return dict(sorted(out.items()))

    def live_by_medium(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, m), d in self._maps.items():
            if d:
                out[self.media[m]] = out.get(self.media[m], 0) + len(d)
        return out

    def _relink(self, live: np.ndarray) -> tuple[np.ndarray, int]:
        """Parent slots of the live slots (-1 for roots), after linking blocks whose
        parent hash came back live since they were stored. Orphans are looked up only
        when blocks were stored since the last look (only a store brings a parent back)."""
        par = self._parent[live]
        ok = par >= 0
        ok[ok] = self._live[par[ok]] & (self._uids[par[ok]] == self._parent_uid[live[ok]])
        par[~ok] = -1
        relinked = 0
        if self.stored != self._relinked_at:
            self._relinked_at = self.stored
            lost = np.flatnonzero(~ok)
            lost = lost[self._parent_hash[live[lost]] != None]  # noqa: E711 (elementwise)
            for i in lost.tolist():
                s = int(live[i])
                d = self._maps.get((int(self._rank[s]), int(self._med[s])))
                p = -1 if d is None else d.get(self._parent_hash[s], -1)
                if p >= 0:
                    self._parent[s], self._parent_uid[s] = p, self._uids[p]
                    par[i] = p
                    relinked += 1
        return par, relinked

    def _refresh_forest(self, live: np.ndarray) -> None:
        """Recompute depth and root (pointer jumping) only when stores keep them wrong:
        after an inner block was removed, or when an orphan's parent may be back."""
        look = self._orphans and self.stored != self._relinked_at
        if not (self._dirty or look):
            return
        par, relinked = self._relink(live)
        if not (self._dirty or relinked):
            return                         # no parent came back: the arrays still hold
        depth, root = depth_and_root(live, par, self._next)
        self._depth[live] = depth
        self._root[live] = self._uids[root]
        self._nchild[:] = 0
        np.add.at(self._nchild, par[par >= 0], 1)
        self._orphans = bool(((par < 0) & (self._parent_hash[live] != None)).any())  # noqa: E711
        self._dirty = False

    def _live_slots(self) -> np.ndarray:
        self._flush()
        live = np.flatnonzero(self._live[:self._next]).astype(np.int64)
        self._refresh_forest(live)
        return live

    def block_map(self) -> BlockMap:
        live = self._live_slots()
        now = self.now
        return BlockMap(
            t=now, capacity=self._next, slot=live.astype(np.int32), rank=self._rank[live],
            medium=self._med[live], depth=self._depth[live], root=self._root[live],
            age_s=(now - self._first[live]).astype(np.float32),
            idle_s=(now - self._last[live]).astype(np.float32), reuse=self._reuse[live],
            media=tuple(self.media))

    def parent_slots(self) -> tuple[np.ndarray, np.ndarray]:
        """(live slots, each one's live parent slot or -1): the forest's edges, for a
        view that draws chains and shared prefixes."""
        live = self._live_slots()
        par, _ = self._relink(live)
        return live, par

    def forest_counts(self) -> tuple[int, int]:
        """(tree_roots, max_chain_depth) of the live blocks."""
        live = self._live_slots()
        if live.size == 0:
            return 0, 0
        depth = self._depth[live]
        return int((depth == 1).sum()), int(depth.max())

    def tokens(self, slot: int) -> tuple[int, ...] | None:
        """The token ids of the block in `slot`, when kept (decoded here, on demand)."""
        self._flush()
        data = self._tok[slot] if 0 <= slot < self._next else None
        if data is None:
            return None
        try:
            ids = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            return None
        bs, i = int(self._bs[slot]), int(self._tok_idx[slot])
        row = ids[i * bs:(i + 1) * bs] if isinstance(ids, list) else []
        return tuple(row) if row and all(type(t) is int for t in row) else None

    def detail(self, slot: int) -> BlockDetail | None:
        """What is known of the block in `slot`; None when the slot is free."""
        self._flush()
        if not (0 <= slot < self._next) or not self._live[slot]:
            return None
        depth, s, seen = 1, slot, {slot}
        while True:                                # parent links are checked by uid
            p = int(self._parent[s])
            if p < 0 or not self._live[p] or self._uids[p] != self._parent_uid[s] or p in seen:
                break
            seen.add(p)
            depth, s = depth + 1, p
        return BlockDetail(
            slot=slot, rank=int(self._rank[slot]), medium=self.media[int(self._med[slot])],
            block_hash=self._hash[slot], parent_hash=self._parent_hash[slot], depth=depth,
            token_ids=self.tokens(slot), first_stored=float(self._first[slot]),
            last_touched=float(self._last[slot]), reuse=int(self._reuse[slot]))

    def chain_tokens(self, slot: int) -> list[int] | None:
        """Token ids from the tree root down to `slot` (for decoded text on hover);
        None when a block on the way has no kept tokens."""
        out: list[list[int]] = []
        s = slot
        for _ in range(self._next):
            d = self.detail(s)
            if d is None or d.token_ids is None:
                return None
            out.append(list(d.token_ids))
            p = int(self._parent[s])
            if p < 0 or not self._live[p] or self._uids[p] != self._parent_uid[s]:
                break
            s = p
        return [t for blk in reversed(out) for t in blk]

    def churn(self) -> Churn:
        self._commit_second()
        return churn_series(self._ring_sec, self._ring)

    def blocks_snapshot(self, block_size: int) -> BlocksSnapshot:
        """The engine's pool contract over slots: what the events cannot say is marked
        unknown (ref_cnt -1 and owner -1 on live blocks), never invented."""
        self._flush()
        n = self._next
        live = self._live[:n]
        ref = np.where(live, -1, 0).astype(np.int32)
        return BlocksSnapshot(block_size=block_size, ref_cnt=ref, owner=np.full(n, -1, np.int64),
                              num_tokens=np.where(live, block_size, 0).astype(np.int32),
                              is_cached=live.copy(), evictable=np.zeros(n, np.bool_))
