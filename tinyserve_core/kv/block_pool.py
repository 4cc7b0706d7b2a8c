"""The physical block pool: refcounted blocks, the LRU free queue and the prefix cache.

Semantics follow vLLM v1's BlockPool:
* a block whose refcount drops to zero goes back to the free queue but, if it holds a
  full hashed block, keeps its hash and stays in the `hash -> block` map (it is
  "cached-free" and can still be hit);
* eviction is lazy: only when an allocation pops a cached-free block does it lose its
  hash (an `Evict` event);
* a prefix hit on a cached-free block pulls it out of the middle of the queue in O(1).

One deliberate difference: a freed block that carries no hash goes to the *head* of
the queue, not the tail. It holds nothing that can ever be hit, so reusing it before
any cached block strictly improves the hit rate; cached blocks keep their LRU order.

The per-block numpy arrays (`ref_cnt`, `is_cached`, `fill`) and the counters are
updated at every change, so the GUI snapshot and the statistics never walk the pool."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..observe.events import Evict, EventSink
from .free_queue import FreeBlockQueue


class NoFreeBlocksError(RuntimeError):
    """The pool cannot supply the blocks an operation needs (check can_* first)."""


class KVCacheBlock:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "token_ids",
                 "prev_free_block", "next_free_block")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: int | None = None
        self.token_ids: tuple[int, ...] | None = None  # kept with the hash, for inspection
        self.prev_free_block: KVCacheBlock | None = None
        self.next_free_block: KVCacheBlock | None = None

    def __repr__(self) -> str:
        h = "-" if self.block_hash is None else f"{self.block_hash & 0xFFFFFFFF:08x}"
        return f"KVCacheBlock(id={self.block_id}, ref={self.ref_cnt}, hash={h})"


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, sink: EventSink | None = None):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.sink = sink
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_queue = FreeBlockQueue(self.blocks)
        self.cached_blocks: dict[int, KVCacheBlock] = {}
        self.ref_cnt = np.zeros(num_blocks, np.int32)
        self.is_cached = np.zeros(num_blocks, np.bool_)
        self.fill = np.zeros(num_blocks, np.int32)   # token slots holding a token
        self.num_used = 0            # ref_cnt > 0
        self.num_shared = 0          # ref_cnt > 1
        self.num_cached_free = 0     # ref_cnt == 0 and hashed (evictable)
        self.used_fill = 0           # sum of fill over used blocks
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        return self.free_queue.num_free_blocks

    def _emit(self, event) -> None:
        if self.sink is not None:
            self.sink.emit(event)

    def get_cached_block(self, block_hash: int) -> KVCacheBlock | None:
        return self.cached_blocks.get(block_hash)

    def get_new_blocks(self, num: int) -> list[KVCacheBlock]:
        """Pop `num` blocks from the head of the free queue (evicting cached ones), ref 1."""
        if num > self.num_free:
            raise NoFreeBlocksError(f"need {num} blocks, {self.num_free} free")
        out = []
        for _ in range(num):
            block = self.free_queue.popleft()
            if block.block_hash is not None:
                self.num_cached_free -= 1
                self._evict(block)
            block.ref_cnt = 1
            self.ref_cnt[block.block_id] = 1
            self.num_used += 1
            out.append(block)
        return out

    def _evict(self, block: KVCacheBlock) -> None:
        block_hash = block.block_hash
        del self.cached_blocks[block_hash]
        block.block_hash = None
        block.token_ids = None
        self.is_cached[block.block_id] = False
        self.fill[block.block_id] = 0
        self.num_evictions += 1
        self._emit(Evict(block.block_id, block_hash))

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take one more reference to each block (prefix hit or fork)."""
        for block in blocks:
            if block.ref_cnt == 0:
                # only hashed blocks can be found while free: this is a prefix hit
                self.free_queue.remove(block)
                self.num_cached_free -= 1
                self.num_used += 1
                self.used_fill += int(self.fill[block.block_id])
            elif block.ref_cnt == 1:
                self.num_shared += 1
            block.ref_cnt += 1
            self.ref_cnt[block.block_id] = block.ref_cnt

    def release(self, block: KVCacheBlock) -> bool:
        """Drop one reference; True when the block went back to the free queue."""
        if block.ref_cnt <= 0:
            raise ValueError(f"block {block.block_id} released with ref_cnt {block.ref_cnt}")
        block.ref_cnt -= 1
        bid = block.block_id
        self.ref_cnt[bid] = block.ref_cnt
        if block.ref_cnt == 1:
            self.num_shared -= 1
            return False
        if block.ref_cnt > 0:
            return False
        self.num_used -= 1
        self.used_fill -= int(self.fill[bid])
        if block.block_hash is not None:
            self.num_cached_free += 1
            self.free_queue.append(block)
        else:
            self.fill[bid] = 0
            self.free_queue.appendleft(block)
        return True

    def set_fill(self, block: KVCacheBlock, num_tokens: int) -> None:
        bid = block.block_id
        if block.ref_cnt > 0:
            self.used_fill += num_tokens - int(self.fill[bid])
        self.fill[bid] = num_tokens

    def cache_block(self, block: KVCacheBlock, block_hash: int,
                    token_ids: Sequence[int]) -> bool:
        """Register a full, computed block under its hash. False (and the block stays
        uncached) when another block already holds that hash: the map keeps one block
        per hash, and the first one may already be shared by other sequences."""
        if block.block_hash is not None:
            if block.block_hash != block_hash:
                raise ValueError(f"block {block.block_id} already cached under another hash")
            return True
        if block_hash in self.cached_blocks:
            return False
        block.block_hash = block_hash
        block.token_ids = tuple(token_ids)
        self.cached_blocks[block_hash] = block
        self.is_cached[block.block_id] = True
        return True

    def reset_prefix_cache(self) -> int:
        """Drop the hash of every cached-free block (used blocks keep theirs); returns
        how many were dropped. O(cached blocks): an explicit user action, not a step op."""
        dropped = 0
        for block_hash, block in list(self.cached_blocks.items()):
            if block.ref_cnt == 0:
                self._evict(block)
                self.num_cached_free -= 1
                self.free_queue.remove(block)
                self.free_queue.appendleft(block)
                dropped += 1
        return dropped
