"""The model of a server's prefix cache, built from its KV events alone.

Live blocks are keyed by (rank, medium, hash): a hash names a block within one rank's
cache, and an offloading server holds the same hash on GPU and CPU at once (a removal
names its medium). Each block has a *slot*: a stable integer while it lives, reused
after it goes (like a physical block id, which the events do not carry), so a block map
can paint slot i at a fixed cell.

Per slot, in growable numpy arrays (struct of arrays): live flag, rank, medium,
parent slot (+ the parent's uid, so a reused slot is never mistaken for the parent),
first-stored and last-touched time (server time: the batch `ts`), re-store count (a
`BlockStored` for a live hash is a reuse), the hash and parent hash (references to the
decoded objects). What is kept is bounded: token ids stay as the chain's msgpack bytes
(shared by its blocks, decoded only when a view asks), only while fewer than
`token_blocks_cap` blocks hold them and a chain's bytes are under `max_token_bytes`
(later blocks report tokens as unknown); churn per second in a ring of
`churn_seconds`; nothing of dead blocks beyond their counts. Memory grows with the
live blocks, which the server bounds (`tinyserve bench attach` measures bytes/block).

Depth and root are derived when asked (`block_map()`): a block whose parent is not
live is a root; after its parent comes back under the same hash it is linked again."""

from __future__ import annotations

import msgspec
import numpy as np

from .cache_reads import CacheReads
from .wire import AllBlocksCleared, BlockRemoved, BlockStored, DecodedBatch

MEDIA = ("GPU", "CPU", "STORAGE", "?")       # "?" = the server did not say


def _objects(items: list) -> np.ndarray:
    """A 1-D object array of `items` (np.array would nest equal-length bytes)."""
    a = np.empty(len(items), object)
    a[:] = items
    return a


class CacheModel(CacheReads):
    """Apply decoded batches in order with `apply(batch, rank)`; read with `block_map`,
    `churn`, `detail`, `counts`. Not thread-safe: one thread applies and reads (the
    subscriber's), views get the immutable BlockMap / Churn copies."""

    def __init__(self, *, token_blocks_cap: int = 262_144, max_token_bytes: int = 1 << 16,
                 churn_seconds: int = 600, capacity: int = 1024):
        self.token_blocks_cap = token_blocks_cap
        self.max_token_bytes = max_token_bytes      # per BlockStored chain
        self.media: list[str] = list(MEDIA)
        self._maps: dict[tuple[int, int], dict] = {}        # (rank, medium) -> hash -> slot
        self._free: list[int] = []
        self._next = 0
        self._uid = 0
        self._cap = 0
        self._grow(capacity)
        self._new_queue()
        self.token_blocks = 0
        self._enc = msgspec.msgpack.Encoder()
        n = churn_seconds
        self._ring_sec = np.full(n, -1, np.int64)
        self._ring = np.zeros((n, 4), np.float64)           # stored, removed, cleared, live
        self.now = 0.0
        self._cur_sec = -1
        self._cur = [0, 0, 0]
        self._live_count = 0
        self._relinked_at = -1           # `stored` when orphans were last looked up
        self._dirty = False              # depth/root arrays stale (an inner block went)
        self._orphans = False            # blocks whose parent hash is not live may exist
        self.stored = self.removed = self.cleared = self.reused = 0
        self.unknown_removals = 0        # removals of hashes not live (joined late, or lost)
        self.events = {"BlockStored": 0, "BlockRemoved": 0, "AllBlocksCleared": 0, "other": 0}

    # -- storage -------------------------------------------------------------------
    def _grow(self, cap: int) -> None:
        def grown(name, dtype, fill=0):
            b = np.full(cap, fill, dtype)
            a = getattr(self, name, None)
            if a is not None:
                b[:a.shape[0]] = a
            setattr(self, name, b)
        grown("_live", np.bool_)
        grown("_rank", np.int16)
        grown("_med", np.int8)
        grown("_parent", np.int32, -1)
        grown("_parent_uid", np.int64, -1)
        grown("_uids", np.int64, -1)
        grown("_first", np.float64)
        grown("_last", np.float64)
        grown("_reuse", np.int32)
        grown("_hash", object, None)          # the dict's own key objects: no copies
        grown("_parent_hash", object, None)
        grown("_tok", object, None)           # msgpack bytes of the chain's token ids
        grown("_tok_idx", np.int32)           # this block's index in that chain
        grown("_bs", np.int32)                # block size (tokens per block)
        grown("_depth", np.int32)             # kept up to date while no inner block goes
        grown("_root", np.int64, -1)          # uid of the tree's root
        grown("_nchild", np.int32)            # live children: removing a parent re-shapes trees
        self._cap = cap

    def _alloc(self, k: int) -> list[int]:
        take = self._free[-k:] if k <= len(self._free) else list(self._free)
        del self._free[len(self._free) - len(take):]
        more = k - len(take)
        if more:
            if self._next + more > self._cap:
                self._grow(max(self._cap * 2, self._next + more))
            take.extend(range(self._next, self._next + more))
            self._next += more
        return take

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
            if isinstance(e, BlockStored):
                self.events["BlockStored"] += 1
                self.store(rank, e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size,
                           e.medium, ts)
            elif isinstance(e, BlockRemoved):
                self.events["BlockRemoved"] += 1
                self.remove(rank, e.block_hashes, e.medium, ts)
            elif isinstance(e, AllBlocksCleared):
                self.events["AllBlocksCleared"] += 1
                self.clear(rank, ts)
        self.events["other"] += batch.other
        self._flush()

    def store(self, rank: int, hashes, parent_hash, token_ids, block_size: int,
              medium: str | None, ts: float) -> None:
        """A chain of blocks (`token_ids`: a list, or the msgpack bytes / Raw of one).
        The dict work happens now; the array writes are queued and done for a whole
        batch at once (`_flush`), which is most of the speed of applying."""
        n = len(hashes)
        if not n:
            return
        self._at(ts)
        med = self._medium_code(medium)
        d = self._map(rank, med)
        get = d.get
        p0 = get(parent_hash, -1) if parent_hash is not None else -1
        slots = [get(h, -1) for h in hashes]
        pos: list[int] | None = None      # chain positions of the new blocks (None: all)
        if slots.count(-1) == n and len(set(hashes)) == n:
            new = slots = self._alloc(n)          # the common case: a new chain
            d.update(zip(hashes, new))
            keys = hashes
            old: list[int] = []
        else:                             # some live already, or a hash repeated in the chain
            new, pos = [], []
            for i in range(n):
                if slots[i] < 0:
                    s = get(hashes[i], -1)
                    if s < 0:
                        s = self._alloc(1)[0]
                        d[hashes[i]] = s
                        new.append(s)
                        pos.append(i)
                    slots[i] = s
            keys = [hashes[i] for i in pos]
            fresh = set(pos)
            old = [slots[i] for i in range(n) if i not in fresh]
        q = self._q
        k = len(new)
        q["new"] += new
        q["key"] += keys
        q["rank"] += [rank] * k
        q["med"] += [med] * k
        q["first"] += [ts] * k
        q["all"] += slots
        q["last"] += [ts] * n
        q["chain"].append((len(q["all"]) - n, n, p0))
        q["parent"].append(p0)
        q["parent"] += slots[:-1]
        if p0 < 0 and parent_hash is not None:
            self._orphans = True          # its parent may be stored later: look again then
        q["phash"].append(parent_hash)
        q["phash"] += hashes[:-1]
        q["old"] += old
        self._keep_tokens(new, pos, token_ids, block_size)
        self.stored += k
        self._live_count += k
        self.reused += len(old)
        self._cur[0] += k

    def _new_queue(self) -> None:
        self._q: dict[str, list] = {k: [] for k in (
            "new", "key", "rank", "med", "first", "all", "last", "parent", "phash", "old", "chain",
            "tok_slot", "tok_data", "tok_idx", "tok_bs")}

    def _flush(self) -> None:
        q = self._q
        if not q["all"]:
            return
        nw = np.asarray(q["new"], np.int64)
        if nw.size:
            self._live[nw] = True
            self._rank[nw] = q["rank"]
            self._med[nw] = q["med"]
            self._first[nw] = q["first"]
            self._reuse[nw] = 0
            self._uids[nw] = np.arange(self._uid, self._uid + nw.size)
            self._uid += nw.size
            self._hash[nw] = _objects(q["key"])
        al = np.asarray(q["all"], np.int64)
        par = np.asarray(q["parent"], np.int64)
        self._last[al] = q["last"]
        self._parent[al] = par
        self._parent_uid[al] = np.where(par >= 0, self._uids[par], -1)
        self._parent_hash[al] = _objects(q["phash"])
        if q["old"]:
            np.add.at(self._reuse, np.asarray(q["old"], np.int64), 1)
        if nw.size:
            pn = self._parent[nw]
            np.add.at(self._nchild, pn[pn >= 0], 1)
        depth, root, uids = self._depth, self._root, self._uids
        for start, n, p0 in q["chain"]:   # in order: a parent stored earlier in the batch is done
            c = al[start:start + n]
            if p0 >= 0:
                depth[c] = np.arange(depth[p0] + 1, depth[p0] + 1 + n)
                root[c] = root[p0]
            else:
                depth[c] = np.arange(1, n + 1)
                root[c] = uids[c[0]]
        if q["tok_slot"]:
            ts = np.asarray(q["tok_slot"], np.int64)
            self._tok[ts] = _objects(q["tok_data"])
            self._tok_idx[ts] = q["tok_idx"]
            self._bs[ts] = q["tok_bs"]
        self._new_queue()

    def _keep_tokens(self, new: list[int], pos: list[int] | None, token_ids, block_size: int) -> None:
        """Only fresh blocks, only under the caps; kept as the chain's msgpack bytes,
        decoded when a view asks (`tokens`)."""
        if not new or block_size <= 0 or self.token_blocks + len(new) > self.token_blocks_cap:
            return
        if isinstance(token_ids, msgspec.Raw):
            data = bytes(token_ids)
        elif token_ids:
            data = self._enc.encode(token_ids)
        else:
            return
        if len(data) > self.max_token_bytes:
            return
        q = self._q
        q["tok_slot"] += new
        q["tok_data"] += [data] * len(new)
        q["tok_idx"] += range(len(new)) if pos is None else pos
        q["tok_bs"] += [block_size] * len(new)
        self.token_blocks += len(new)

    def _release(self, slots: list[int]) -> None:
        if not slots:
            return
        self._flush()
        sl = np.asarray(slots, np.int64)
        self._live[sl] = False
        self._live_count -= len(slots)
        if self._nchild[sl].any():
            self._dirty = True            # live children lose their parent: trees re-shape
        par = self._parent[sl]
        has = par >= 0
        has[has] = self._uids[par[has]] == self._parent_uid[sl[has]]
        np.add.at(self._nchild, par[has], -1)
        self._nchild[sl] = 0
        self.token_blocks -= int((self._tok[sl] != None).sum())  # noqa: E711
        self._hash[sl] = None
        self._parent_hash[sl] = None
        self._tok[sl] = None
        self._free.extend(slots)

    def remove(self, rank: int, hashes, medium: str | None, ts: float) -> None:
        self._at(ts)
        med = self._medium_code(medium)
        pop = self._map(rank, med).pop
        found = [pop(h, -1) for h in hashes]
        gone = [s for s in found if s >= 0]
        if len(gone) < len(found):
            others = ([d for (r, m), d in self._maps.items() if r == rank and m != med]
                      if medium is None else [])     # an unnamed medium: whichever holds it
            for h, s in zip(hashes, found):
                if s >= 0:
                    continue
                for d in others:
                    s = d.pop(h, -1)
                    if s >= 0:
                        gone.append(s)
                        break
                else:
                    self.unknown_removals += 1
        self._release(gone)
        self.removed += len(gone)
        self._cur[1] += len(gone)

    def clear(self, rank: int, ts: float) -> None:
        """AllBlocksCleared: this rank's blocks only."""
        self._at(ts)
        gone: list[int] = []
        for (r, _), d in self._maps.items():
            if r == rank:
                gone.extend(d.values())
                d.clear()
        self._release(gone)
        self.cleared += len(gone)
        self._cur[2] += len(gone)

    def _at(self, ts: float) -> None:
        """Before an event changes anything: move the clock, and when a new second
        starts, write the last one (its counts, its final live count) to the ring.
        Counting stays in plain Python: this runs per event."""
        if ts > self.now:
            self.now = ts
        sec = int(ts) if ts >= 0 else 0
        if sec != self._cur_sec:
            self._commit_second()
            self._cur_sec = sec

    def _commit_second(self) -> None:
        sec = self._cur_sec
        if sec < 0:
            return
        i = sec % self._ring_sec.shape[0]
        if self._ring_sec[i] != sec:
            self._ring_sec[i] = sec
            self._ring[i] = 0.0
        self._ring[i, :3] += self._cur
        self._ring[i, 3] = self._live_count
        self._cur = [0, 0, 0]
