"""The model of a server's prefix cache, built from its KV events alone.

Live blocks are keyed by (rank, medium, hash): a hash names a block within one rank's
cache, and an offloading server holds the same hash on GPU and CPU at once (a removal
names its medium). Each block has a *slot*: a stable integer while it lives, reused
after it goes (like a physical block id, which the events do not carry), so a block map
can paint slot i at a fixed cell.

Per slot, in growable numpy arrays (struct of arrays, ~60 bytes a block with the dict
entry): live flag, rank, medium, parent slot (+ the parent's uid, so a reused slot is
never mistaken for the parent), first-stored and last-touched time (server time: the
batch `ts`), re-store count (a `BlockStored` for a live hash is a reuse). What is kept
is bounded: token ids as packed int32, at most `max_tokens_per_block` per block and only
while fewer than `token_blocks_cap` blocks hold them (later blocks report tokens as
unknown); churn per second in a ring of `churn_seconds`; no history of dead blocks
beyond their counts. Memory grows with the live blocks, which the server bounds.

Depth and root are derived when asked (`block_map()`): a block whose parent is not
live is a root; after its parent comes back under the same hash it is linked again."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kv.stats import BlocksSnapshot
from .wire import AllBlocksCleared, BlockRemoved, BlockStored, DecodedBatch

MEDIA = ("GPU", "CPU", "STORAGE", "?")       # "?" = the server did not say


@dataclass(frozen=True, slots=True)
class BlockMap:
    """The live blocks as parallel arrays (one entry per live block, by slot order):
    what a block map paints. `root` is the uid of the block's tree root (a colour per
    prefix tree), `depth` counts blocks from that root, inclusive."""
    t: float                   # server time of the newest event applied
    capacity: int              # slots in use so far: a map of this many cells holds every block
    slot: np.ndarray           # int32
    rank: np.ndarray           # int16
    medium: np.ndarray         # int8, index into `media`
    depth: np.ndarray          # int32, >= 1
    root: np.ndarray           # int64
    age_s: np.ndarray          # float32, since first stored
    idle_s: np.ndarray         # float32, since last stored again (or first stored)
    reuse: np.ndarray          # int32, re-stores while live
    media: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.slot.shape[0])


@dataclass(frozen=True, slots=True)
class BlockDetail:
    slot: int
    rank: int
    medium: str
    block_hash: int | bytes
    parent_hash: int | bytes | None
    depth: int
    token_ids: tuple[int, ...] | None      # None: not kept (over the caps)
    first_stored: float
    last_touched: float
    reuse: int


@dataclass(frozen=True, slots=True)
class Churn:
    """Per second of server time, oldest first: blocks stored / removed / cleared and
    the live count at the end of that second (NaN for a second with no events)."""
    t: np.ndarray
    stored: np.ndarray
    removed: np.ndarray
    cleared: np.ndarray
    live: np.ndarray


class CacheModel:
    """Apply decoded batches in order with `apply(batch, rank)`; read with `block_map`,
    `churn`, `detail`, `counts`. Not thread-safe: one thread applies and reads (the
    subscriber's), views get the immutable BlockMap / Churn copies."""

    def __init__(self, *, token_blocks_cap: int = 262_144, max_tokens_per_block: int = 256,
                 churn_seconds: int = 600, capacity: int = 1024):
        self.token_blocks_cap = token_blocks_cap
        self.max_tokens_per_block = max_tokens_per_block
        self.media: list[str] = list(MEDIA)
        self._maps: dict[tuple[int, int], dict] = {}        # (rank, medium) -> hash -> slot
        self._free: list[int] = []
        self._next = 0
        self._uid = 0
        self._cap = 0
        self._grow(capacity)
        self._hash: list = [None] * self._cap
        self._parent_hash: list = [None] * self._cap
        self._tokens: dict[int, bytes] = {}
        n = churn_seconds
        self._ring_sec = np.full(n, -1, np.int64)
        self._ring = np.zeros((n, 4), np.float64)           # stored, removed, cleared, live
        self.now = 0.0
        self.stored = self.removed = self.cleared = self.reused = 0
        self.unknown_removals = 0        # removals of hashes not live (joined late, or lost)
        self.events = {"BlockStored": 0, "BlockRemoved": 0, "AllBlocksCleared": 0, "other": 0}

    # -- storage -------------------------------------------------------------------
    def _grow(self, cap: int) -> None:
        def grown(a, dtype, fill=0):
            b = np.full(cap, fill, dtype)
            if a is not None:
                b[:a.shape[0]] = a
            return b
        g = lambda name: getattr(self, name, None)
        self._live = grown(g("_live"), np.bool_)
        self._rank = grown(g("_rank"), np.int16)
        self._med = grown(g("_med"), np.int8)
        self._parent = grown(g("_parent"), np.int32, -1)
        self._parent_uid = grown(g("_parent_uid"), np.int64, -1)
        self._uids = grown(g("_uids"), np.int64, -1)
        self._first = grown(g("_first"), np.float64)
        self._last = grown(g("_last"), np.float64)
        self._reuse = grown(g("_reuse"), np.int32)
        if self._cap:
            extra = cap - self._cap
            self._hash.extend([None] * extra)
            self._parent_hash.extend([None] * extra)
        self._cap = cap

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next == self._cap:
            self._grow(self._cap * 2)
        self._next += 1
        return self._next - 1

    def _medium_code(self, medium: str | None) -> int:
        if medium is None:
            return 3
        try:
            return self.media.index(medium)
        except ValueError:
            if len(self.media) >= 127:       # int8 codes; a server inventing media: lump them
                return 3
            self.media.append(medium)
            return len(self.media) - 1

    def _map(self, rank: int, med: int) -> dict:
        d = self._maps.get((rank, med))
        if d is None:
            d = self._maps[(rank, med)] = {}
        return d

    # -- applying ------------------------------------------------------------------
    def apply(self, batch: DecodedBatch, rank: int) -> None:
        """One batch of one rank, in that publisher's sequence order."""
        ts = batch.ts
        for e in batch.events:
            if type(e) is BlockStored:
                self.events["BlockStored"] += 1
                self.store(rank, e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size,
                           e.medium, ts)
            elif type(e) is BlockRemoved:
                self.events["BlockRemoved"] += 1
                self.remove(rank, e.block_hashes, e.medium, ts)
            elif type(e) is AllBlocksCleared:
                self.events["AllBlocksCleared"] += 1
                self.clear(rank, ts)
        self.events["other"] += batch.other

    def store(self, rank: int, hashes, parent_hash, token_ids, block_size: int,
              medium: str | None, ts: float) -> None:
        med = self._medium_code(medium)
        d = self._map(rank, med)
        slots: list[int] = []
        new: list[int] = []
        old: list[int] = []
        for h in hashes:
            s = d.get(h)
            if s is None:
                s = self._alloc()
                d[h] = s
                self._hash[s] = h
                new.append(s)
            else:
                old.append(s)
            slots.append(s)
        if not slots:
            return
        p0 = d.get(parent_hash, -1) if parent_hash is not None else -1
        sl = np.asarray(slots, np.int32)
        parents = np.empty_like(sl)
        parents[0] = p0
        parents[1:] = sl[:-1]
        if new:
            nw = np.asarray(new, np.int32)
            self._live[nw] = True
            self._rank[nw] = rank
            self._med[nw] = med
            self._first[nw] = ts
            self._reuse[nw] = 0
            self._uids[nw] = np.arange(self._uid, self._uid + len(new))
            self._uid += len(new)
        if old:
            self._reuse[np.asarray(old, np.int32)] += 1
            self.reused += len(old)
        self._last[sl] = ts
        self._parent[sl] = parents
        self._parent_uid[sl] = np.where(parents >= 0, self._uids[parents], -1)
        ph = self._parent_hash
        ph[slots[0]] = parent_hash if p0 < 0 else self._hash[p0]   # share the key object
        for i in range(1, len(slots)):
            ph[slots[i]] = self._hash[slots[i - 1]]
        self._keep_tokens(slots, token_ids, block_size)
        self.stored += len(new)
        self._tick(ts, 0, len(new))

    def _keep_tokens(self, slots: list[int], token_ids, block_size: int) -> None:
        if not token_ids or block_size <= 0:
            return
        room = self.token_blocks_cap - len(self._tokens)
        if room <= 0:
            return
        keep = min(block_size, self.max_tokens_per_block)
        try:
            arr = np.asarray(token_ids, np.int32)
        except (OverflowError, ValueError):
            return       # ids beyond int32 are not token ids we can decode
        for i, s in enumerate(slots[:room]):
            row = arr[i * block_size:i * block_size + keep]
            if row.size:
                self._tokens[s] = row.tobytes()

    def _release(self, slots: list[int]) -> None:
        if not slots:
            return
        self._live[np.asarray(slots, np.int32)] = False
        tok = self._tokens
        for s in slots:
            self._hash[s] = None
            self._parent_hash[s] = None
            tok.pop(s, None)
        self._free.extend(slots)

    def remove(self, rank: int, hashes, medium: str | None, ts: float) -> None:
        med = self._medium_code(medium)
        maps = [self._map(rank, med)]
        if medium is None:       # an unnamed medium: whichever of this rank's holds it
            maps += [d for (r, m), d in self._maps.items() if r == rank and m != med]
        gone: list[int] = []
        for h in hashes:
            for d in maps:
                s = d.pop(h, None)
                if s is not None:
                    gone.append(s)
                    break
            else:
                self.unknown_removals += 1
        self._release(gone)
        self.removed += len(gone)
        self._tick(ts, 1, len(gone))

    def clear(self, rank: int, ts: float) -> None:
        """AllBlocksCleared: this rank's blocks only."""
        gone: list[int] = []
        for (r, _), d in self._maps.items():
            if r == rank:
                gone.extend(d.values())
                d.clear()
        self._release(gone)
        self.cleared += len(gone)
        self._tick(ts, 2, len(gone))

    def _tick(self, ts: float, col: int, n: int) -> None:
        if ts > self.now:
            self.now = ts
        sec = int(ts) if ts >= 0 else 0
        i = sec % self._ring_sec.shape[0]
        if self._ring_sec[i] != sec:
            self._ring_sec[i] = sec
            self._ring[i] = 0.0
        self._ring[i, col] += n
        self._ring[i, 3] = self.blocks_live

    # -- reading -------------------------------------------------------------------
    @property
    def blocks_live(self) -> int:
        return sum(len(d) for d in self._maps.values())

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

    def _relink(self, live: np.ndarray) -> np.ndarray:
        """Parent slots of the live slots (-1 for roots), after linking blocks whose
        parent hash came back live since they were stored."""
        par = self._parent[live]
        ok = (par >= 0)
        ok[ok] = self._live[par[ok]] & (self._uids[par[ok]] == self._parent_uid[live[ok]])
        for i in np.flatnonzero(~ok):
            s = int(live[i])
            ph = self._parent_hash[s]
            p = -1 if ph is None else self._maps.get((int(self._rank[s]), int(self._med[s])), {}).get(ph, -1)
            if p >= 0:
                self._parent[s], self._parent_uid[s] = p, self._uids[p]
                par[i] = p
            else:
                par[i] = -1
        return par

    def _depth_root(self, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth and root slot of each live slot by pointer jumping: O(N log depth)."""
        par = self._relink(live)
        up = np.arange(self._next, dtype=np.int64)
        up[live] = np.where(par >= 0, par, live)
        hop = np.zeros(self._next, np.int64)
        hop[live] = (par >= 0)
        for _ in range(64):          # bounded: junk parent links can form a cycle
            nxt = up[up]
            if np.array_equal(nxt, up):
                break
            hop += hop[up]
            up = nxt
        return (hop[live] + 1).astype(np.int32), up[live]

    def block_map(self) -> BlockMap:
        live = np.flatnonzero(self._live[:self._next]).astype(np.int64)
        depth, root = self._depth_root(live)
        now = self.now
        return BlockMap(
            t=now, capacity=self._next, slot=live.astype(np.int32), rank=self._rank[live],
            medium=self._med[live], depth=depth, root=self._uids[root],
            age_s=(now - self._first[live]).astype(np.float32),
            idle_s=(now - self._last[live]).astype(np.float32), reuse=self._reuse[live],
            media=tuple(self.media))

    def forest_counts(self) -> tuple[int, int]:
        """(tree_roots, max_chain_depth) of the live blocks."""
        live = np.flatnonzero(self._live[:self._next]).astype(np.int64)
        if live.size == 0:
            return 0, 0
        depth, _ = self._depth_root(live)
        return int((depth == 1).sum()), int(depth.max())

    def detail(self, slot: int) -> BlockDetail | None:
        """What is known of the block in `slot`; None when the slot is free."""
        if not (0 <= slot < self._next) or not self._live[slot]:
            return None
        tok = self._tokens.get(slot)
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
            token_ids=None if tok is None else tuple(np.frombuffer(tok, np.int32).tolist()),
            first_stored=float(self._first[slot]), last_touched=float(self._last[slot]),
            reuse=int(self._reuse[slot]))

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
        order = np.argsort(self._ring_sec)
        newest = self._ring_sec.max()
        # entries older than the ring's span are stale: their cell was not reused yet
        keep = order[(self._ring_sec[order] >= 0) & (self._ring_sec[order] > newest - self._ring_sec.shape[0])]
        r = self._ring[keep]
        secs = self._ring_sec[keep]
        if secs.size == 0:
            z = np.zeros(0)
            return Churn(z, z, z, z, z)
        t = np.arange(secs[0], secs[-1] + 1, dtype=np.float64)
        out = np.zeros((t.size, 4))
        out[:, 3] = np.nan
        out[secs - secs[0]] = r
        return Churn(t, out[:, 0], out[:, 1], out[:, 2], out[:, 3])

    def blocks_snapshot(self, block_size: int) -> BlocksSnapshot:
        """The engine's pool contract over slots: what the events cannot say is marked
        unknown (ref_cnt -1 and owner -1 on live blocks), never invented."""
        n = self._next
        live = self._live[:n]
        ref = np.where(live, -1, 0).astype(np.int32)
        return BlocksSnapshot(block_size=block_size, ref_cnt=ref, owner=np.full(n, -1, np.int64),
                              num_tokens=np.where(live, block_size, 0).astype(np.int32),
                              is_cached=live.copy(), evictable=np.zeros(n, np.bool_))
