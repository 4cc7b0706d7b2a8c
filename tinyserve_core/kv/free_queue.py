"""The free-block queue: a doubly linked list threaded through the blocks themselves.

Why not a deque: a prefix hit must pull a cached-but-free block out of the middle of
the queue, and a deque makes that O(n). Linking the blocks' own `prev_free_block` /
`next_free_block` fields (as vLLM v1 does) gives O(1) popleft, append and remove,
with no allocation per operation. Order is eviction order: the head is evicted first."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .block_pool import KVCacheBlock


class _Sentinel:
    __slots__ = ("prev_free_block", "next_free_block")

    def __init__(self) -> None:
        self.prev_free_block = None
        self.next_free_block = None


class FreeBlockQueue:
    def __init__(self, blocks: Iterable["KVCacheBlock"] = ()):
        self._head = _Sentinel()
        self._tail = _Sentinel()
        self._head.next_free_block = self._tail
        self._tail.prev_free_block = self._head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def __len__(self) -> int:
        return self.num_free_blocks

    def popleft(self) -> "KVCacheBlock":
        block = self._head.next_free_block
        if block is self._tail:
            raise IndexError("no free blocks")
        self.remove(block)
        return block

    def peekleft(self) -> "KVCacheBlock | None":
        block = self._head.next_free_block
        return None if block is self._tail else block

    def remove(self, block: "KVCacheBlock") -> None:
        prev, nxt = block.prev_free_block, block.next_free_block
        if prev is None or nxt is None:
            raise ValueError(f"block {block.block_id} is not in the free queue")
        prev.next_free_block = nxt
        nxt.prev_free_block = prev
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1

    def append(self, block: "KVCacheBlock") -> None:
        """Put a block at the tail: it is evicted last."""
        self._link(block, self._tail.prev_free_block, self._tail)

    def appendleft(self, block: "KVCacheBlock") -> None:
        """Put a block at the head: it is reused first."""
        self._link(block, self._head, self._head.next_free_block)

    def _link(self, block, prev, nxt) -> None:
        if block.prev_free_block is not None or block.next_free_block is not None:
            raise ValueError(f"block {block.block_id} is already in the free queue")
        block.prev_free_block = prev
        block.next_free_block = nxt
        prev.next_free_block = block
        nxt.prev_free_block = block
        self.num_free_blocks += 1

    def __iter__(self) -> Iterator["KVCacheBlock"]:
        """Head to tail. O(n): for tests and invariant checks only."""
        block = self._head.next_free_block
        while block is not self._tail:
            yield block
            block = block.next_free_block

    def contains(self, block: "KVCacheBlock") -> bool:
        return block.prev_free_block is not None
