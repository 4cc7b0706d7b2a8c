"""Read-only views of the block manager: statistics, the GUI snapshot, block details."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class KVStats:
    num_blocks: int
    block_size: int
    used: int                 # ref_cnt > 0
    cached_free: int          # ref_cnt == 0 with a hash: evictable, can still be hit
    free: int                 # ref_cnt == 0 without a hash
    usage_perc: float         # used / num_blocks, vLLM's kv_cache_usage_perc (0..1)
    waste: float              # empty slots / allocated slots over used blocks (0..1)
    shared: int               # ref_cnt > 1
    num_seqs: int
    allocated_slots: int      # used * block_size (a shared block counts once)
    filled_slots: int         # slots of used blocks holding a token
    prefix_cache_queries: int  # prompt tokens looked up (cumulative)
    prefix_cache_hits: int     # prompt tokens served from the cache (cumulative)
    num_cow_copies: int        # cumulative
    num_evictions: int         # cumulative

    @property
    def num_free_blocks(self) -> int:
        return self.cached_free + self.free

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0


@dataclass(frozen=True, slots=True)
class BlocksSnapshot:
    """Copies of the per-block arrays, safe to read from another thread. The one
    contract of the pool views: these names, these units."""
    block_size: int
    ref_cnt: np.ndarray      # int32
    owner: np.ndarray        # int64, first owning seq id, -1 when none
    num_tokens: np.ndarray   # int32, tokens stored, always tokens (a cached-free block stays full)
    is_cached: np.ndarray    # bool, has a hash (in the prefix cache)
    evictable: np.ndarray    # bool, ref 0 and hashed

    @property
    def num_blocks(self) -> int:
        return int(self.ref_cnt.shape[0])


@dataclass(frozen=True, slots=True)
class BlockInfo:
    block_id: int
    ref_cnt: int
    owners: tuple[int, ...]          # seq ids, oldest reference first
    block_hash: int | None
    fill: int
    token_ids: tuple[int, ...] | None  # what is known of the tokens stored
    in_free_queue: bool
    evictable: bool
