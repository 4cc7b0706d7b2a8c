"""What the cache model hands its views: immutable arrays and records, and the two
array algorithms behind them (forest depth by pointer jumping, churn per second)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def depth_and_root(live: np.ndarray, parent: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth (blocks from the root, inclusive) and root slot of each live slot, given
    each one's live parent slot (-1 for roots), by pointer jumping: O(N log depth)."""
    up = np.arange(n, dtype=np.int64)
    up[live] = np.where(parent >= 0, parent, live)
    hop = np.zeros(n, np.int64)
    hop[live] = (parent >= 0)
    for _ in range(64):          # bounded: junk parent links can form a cycle
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        hop += hop[up]
        up = nxt
    return (hop[live] + 1).astype(np.int32), up[live]


def churn_series(ring_sec: np.ndarray, ring: np.ndarray) -> Churn:
    """The ring of seconds in time order, empty seconds filled (counts 0, live NaN);
    cells older than the ring's span are stale and left out."""
    order = np.argsort(ring_sec)
    secs = ring_sec[order]
    keep = (secs >= 0) & (secs > secs.max() - ring_sec.shape[0])
    order, secs = order[keep], secs[keep]
    if secs.size == 0:
        z = np.zeros(0)
        return Churn(z, z, z, z, z)
    t = np.arange(secs[0], secs[-1] + 1, dtype=np.float64)
    out = np.zeros((t.size, 4))
    out[:, 3] = np.nan
    out[secs - secs[0]] = ring[order]
    return Churn(t, out[:, 0], out[:, 1], out[:, 2], out[:, 3])
