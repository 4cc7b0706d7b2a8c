"""BlockManager: per-sequence block tables over the BlockPool. The scheduler's only
view of KV memory.

A sequence's table maps logical block i to a physical block; token position p lives
in slot `table[p // block_size] * block_size + p % block_size`. `num_tokens` is the
number of positions that have a slot (the prompt after `allocate`, then one more per
`append_slot`), so every block but the last is full and the last holds
`num_tokens - (len(table) - 1) * block_size` tokens.

Why a shared block always has one fill level: blocks are shared either by a prefix hit
(always full) or by `fork` (parent and child have the same length), and any append
into a shared block copies it first. So `fill` is a per-block number and memory waste
counts each shared block once."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..observe.events import Alloc, Cache, CowCopy, EventSink, Fork, Free, PrefixHit
from .block_pool import BlockPool, KVCacheBlock, NoFreeBlocksError
from .hashing import hash_block_tokens, iter_block_hashes, root_hash
from .stats import BlockInfo, BlocksSnapshot, KVStats

MAX_BLOCK_SIZE = 128


@dataclass(slots=True)
class _SeqState:
    table: list[int]
    num_tokens: int
    root: int                        # parent hash of block 0 (carries the salt)
    block_hashes: list[int]          # chained hashes of the leading full blocks, as known
    num_cache_checked: int           # leading blocks cache_full_blocks has handled
    token_ids: Sequence[int] | None  # latest token list seen, for block_info only


class AdmissionPlan(NamedTuple):
    """What admitting a prompt would take, computed once (the prompt hashed once): the
    scheduler's budget check, the fit check and `allocate` all read it. Valid until the
    pool changes."""
    hits: list[KVCacheBlock]   # cached leading blocks
    hashes: list[int]          # chained hashes computed on the way
    num_new: int               # fresh blocks after the hits
    from_free: int             # blocks leaving the free pool (hits on cached-free blocks too)
    root: int                  # parent hash of block 0 (carries the salt)
    block_size: int

    @property
    def num_cached_tokens(self) -> int:
        return len(self.hits) * self.block_size


def _check_int(field: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(field, f"must be an integer, got {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(field, f"must be {allowed}, got {value}")
    return value


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 sink: EventSink | None = None):
        num_blocks = _check_int("num_blocks", num_blocks, 1)
        block_size = _check_int("block_size", block_size, 1, MAX_BLOCK_SIZE)
        if block_size & (block_size - 1):
            raise ConfigError("block_size", f"must be a power of two in 1..{MAX_BLOCK_SIZE}, "
                                            f"got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = bool(enable_prefix_caching)
        self.sink = sink
        self.pool = BlockPool(num_blocks, block_size, sink)
        self._seqs: dict[int, _SeqState] = {}
        # owners per used block, insertion-ordered (dict as ordered set), and the first
        # owner mirrored into a numpy array for the GUI
        self._owners: dict[int, dict[int, None]] = {}
        self._owner = np.full(num_blocks, -1, np.int64)
        self.num_table_entries = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_cow_copies = 0

    # ---------------------------------------------------------------- queries
    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: truly free plus cached-free (evictable)."""
        return self.pool.num_free

    def has_seq(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    def seq_ids(self) -> list[int]:
        return list(self._seqs)

    def num_tokens(self, seq_id: int) -> int:
        return self._seq(seq_id).num_tokens

    def block_table(self, seq_id: int) -> list[int]:
        return list(self._seq(seq_id).table)

    def live_table(self, seq_id: int) -> list[int]:
        """The block table itself, not a copy: for a reader that is done with it before
        the next change (the runner staging a step); never modify it."""
        return self._seq(seq_id).table

    def _seq(self, seq_id: int) -> _SeqState:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise KeyError(f"unknown seq_id {seq_id}") from None

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _match_prefix(self, token_ids: Sequence[int], root: int
                      ) -> tuple[list[KVCacheBlock], list[int]]:
        """Longest run of cached leading blocks, and the hashes computed on the way.

        At most (len - 1) // block_size blocks may hit: the last prompt token is always
        computed, since its logits are needed to sample (vLLM v1 does the same)."""
        if not self.enable_prefix_caching:
            return [], []
        hits: list[KVCacheBlock] = []
        hashes: list[int] = []
        max_hits = (len(token_ids) - 1) // self.block_size
        for block_hash in iter_block_hashes(token_ids, self.block_size, root, max_hits):
            hashes.append(block_hash)
            block = self.pool.get_cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits, hashes

    def plan(self, token_ids: Sequence[int], salt: str | bytes | None = None) -> AdmissionPlan:
        """Hash the prompt once and look up its cached prefix: the plan `fits` and
        `allocate` take, so admission hashes each prompt once."""
        if len(token_ids) == 0:
            raise ConfigError("token_ids", "a prompt needs at least one token")
        root = root_hash(salt)
        hits, hashes = self._match_prefix(token_ids, root)
        num_new = self._blocks_for(len(token_ids)) - len(hits)
        # a hit on a cached-free block also takes it out of the free pool
        from_free = num_new + sum(1 for b in hits if b.ref_cnt == 0)
        return AdmissionPlan(hits, hashes, num_new, from_free, root, self.block_size)

    def fits(self, plan: AdmissionPlan) -> bool:
        return plan.from_free <= self.pool.num_free

    def blocks_needed(self, token_ids: Sequence[int], salt: str | bytes | None = None) -> int:
        """Fresh blocks the prompt needs after prefix hits. (Hits on cached-free blocks
        also leave the free pool: decide admission with can_allocate.)"""
        return self.plan(token_ids, salt).num_new

    def cached_prefix_len(self, token_ids: Sequence[int], salt: str | bytes | None = None) -> int:
        """The num_cached_tokens `allocate` would return right now."""
        return self.plan(token_ids, salt).num_cached_tokens

    def can_allocate(self, token_ids: Sequence[int], salt: str | bytes | None = None) -> bool:
        return self.fits(self.plan(token_ids, salt))

    def _append_slot_cost(self, s: _SeqState) -> int:
        if s.num_tokens % self.block_size == 0:
            return 1
        return 1 if self.pool.blocks[s.table[-1]].ref_cnt > 1 else 0

    def can_append(self, seq_id: int) -> bool:
        """Whether one more token fits (a new block at a boundary, or a CoW copy)."""
        return self._append_slot_cost(self._seq(seq_id)) <= self.pool.num_free

    # ------------------------------------------------------------- ownership
    def _add_owner(self, block_id: int, seq_id: int) -> None:
        owners = self._owners.get(block_id)
        if owners is None:
            self._owners[block_id] = {seq_id: None}
            self._owner[block_id] = seq_id
        else:
            owners[seq_id] = None

    def _remove_owner(self, block_id: int, seq_id: int) -> None:
        owners = self._owners[block_id]
        del owners[seq_id]
        if not owners:
            del self._owners[block_id]
            self._owner[block_id] = -1
        elif self._owner[block_id] == seq_id:
            self._owner[block_id] = next(iter(owners))

    def _emit(self, event) -> None:
        if self.sink is not None:
            self.sink.emit(event)

    def _take_new(self, seq_id: int, num: int, first_index: int, num_tokens: int
                  ) -> list[KVCacheBlock]:
        """Fresh blocks for logical indices first_index.., filled as num_tokens implies."""
        blocks = self.pool.get_new_blocks(num)
        bs = self.block_size
        for j, block in enumerate(blocks):
            self.pool.set_fill(block, min(bs, num_tokens - (first_index + j) * bs))
            self._add_owner(block.block_id, seq_id)
        if blocks:
            self._emit(Alloc(seq_id, tuple(b.block_id for b in blocks)))
        return blocks

    # ------------------------------------------------------------ operations
    def allocate(self, seq_id: int, token_ids: Sequence[int],
                 salt: str | bytes | None = None, plan: AdmissionPlan | None = None) -> int:
        """Give a new sequence blocks for its prompt, reusing the longest cached prefix.
        Returns num_cached_tokens (a multiple of block_size, at most len - 1). `plan`:
        this prompt's plan from `plan()` with no pool change since (else it is made here)."""
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id} already has blocks")
        hits, hashes, num_new, from_free, root, _ = plan if plan is not None else self.plan(token_ids, salt)
        if from_free > self.pool.num_free:
            raise NoFreeBlocksError(f"seq {seq_id} needs {from_free} blocks, "
                                    f"{self.pool.num_free} free")
        n = len(token_ids)
        num_cached = len(hits) * self.block_size
        self.pool.touch(hits)  # before popping new blocks, so none of the hits is evicted
        for block in hits:
            self._add_owner(block.block_id, seq_id)
        if hits:
            self._emit(PrefixHit(seq_id, tuple(b.block_id for b in hits), num_cached))
        new = self._take_new(seq_id, num_new, len(hits), n)
        table = [b.block_id for b in hits]
        table.extend(b.block_id for b in new)
        self._seqs[seq_id] = _SeqState(table, n, root, hashes, len(hits), token_ids)
        self.num_table_entries += len(table)
        self.prefix_cache_queries += n
        self.prefix_cache_hits += num_cached
        return num_cached

    def append_slot(self, seq_id: int, num_tokens: int) -> list[tuple[int, int]]:
        """Make room up to token position num_tokens - 1 (usually one new token).

        Returns the copy-on-write pairs (src, dst) the caller must copy (KV and page
        metadata, `kernels.copy_blocks`) before writing the new token."""
        pairs = self.try_append_slot(seq_id, num_tokens)
        if pairs is None:
            raise NoFreeBlocksError(f"seq {seq_id} needs {self._append_need(self._seq(seq_id), num_tokens)} "
                                    f"blocks, {self.pool.num_free} free")
        return pairs

    def _append_need(self, s: _SeqState, num_tokens: int) -> int:
        last = self.pool.blocks[s.table[-1]]
        return self._blocks_for(num_tokens) - len(s.table) + (s.num_tokens % self.block_size != 0
                                                              and last.ref_cnt > 1)

    def try_append_slot(self, seq_id: int, num_tokens: int) -> list[tuple[int, int]] | None:
        """`append_slot`, or None (and nothing changed) when the pool lacks the blocks it
        needs: the scheduler's one call per sequence and step (no separate `can_append`)."""
        s = self._seq(seq_id)
        bs = self.block_size
        if num_tokens == s.num_tokens + 1 and s.num_tokens % bs:
            # the usual decode step: the next slot of an unshared last block
            last = self.pool.blocks[s.table[-1]]
            if last.ref_cnt == 1:
                self.pool.set_fill(last, num_tokens - (len(s.table) - 1) * bs)
                s.num_tokens = num_tokens
                return []
        if num_tokens <= s.num_tokens:
            if num_tokens == s.num_tokens:
                return []
            raise ValueError(f"seq {seq_id} has {s.num_tokens} tokens; cannot shrink to {num_tokens}")
        num_more = self._blocks_for(num_tokens) - len(s.table)
        last = self.pool.blocks[s.table[-1]]
        cow = s.num_tokens % bs != 0 and last.ref_cnt > 1
        if num_more + cow > self.pool.num_free:
            return None
        pairs: list[tuple[int, int]] = []
        if s.num_tokens % bs:
            last_index = len(s.table) - 1
            if cow:
                dst = self._take_new(seq_id, 1, last_index, num_tokens)[0]
                self.pool.release(last)
                self._remove_owner(last.block_id, seq_id)
                s.table[-1] = dst.block_id
                pairs.append((last.block_id, dst.block_id))
                self.num_cow_copies += 1
                self._emit(CowCopy(seq_id, last.block_id, dst.block_id))
            else:
                self.pool.set_fill(last, min(bs, num_tokens - last_index * bs))
        if num_more:
            new = self._take_new(seq_id, num_more, len(s.table), num_tokens)
            s.table.extend(b.block_id for b in new)
            self.num_table_entries += num_more
        s.num_tokens = num_tokens
        return pairs

    def cache_full_blocks(self, seq_id: int, token_ids: Sequence[int],
                          num_computed_tokens: int) -> None:
        """Hash the blocks that are full and computed, chaining from the block before.

        Call after a step has written the KV of tokens < num_computed_tokens."""
        s = self._seq(seq_id)
        if num_computed_tokens > s.num_tokens or num_computed_tokens > len(token_ids):
            raise ValueError(f"seq {seq_id}: {num_computed_tokens} computed tokens but "
                             f"{s.num_tokens} slots and {len(token_ids)} token ids")
        s.token_ids = token_ids
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = num_computed_tokens // bs
        if num_full <= s.num_cache_checked:
            return                    # most decode steps: no block became full
        hashes = s.block_hashes
        report = self.sink is not None and self.sink.enabled
        run: list[int] = []           # indices of newly cached blocks, one chain at a time
        for i in range(s.num_cache_checked, num_full):
            if i < len(hashes):
                block_hash = hashes[i]
            else:
                block_hash = hash_block_tokens(hashes[i - 1] if i else s.root,
                                               token_ids[i * bs:(i + 1) * bs])
                hashes.append(block_hash)
            block = self.pool.blocks[s.table[i]]
            was_cached = block.block_hash is not None
            if self.pool.cache_block(block, block_hash, token_ids[i * bs:(i + 1) * bs]) \
                    and not was_cached and report:
                run.append(i)
            elif run:                 # a block left out breaks the chain: report what we have
                self._emit_cache(seq_id, s, run, token_ids)
                run = []
        if run:
            self._emit_cache(seq_id, s, run, token_ids)
        s.num_cache_checked = max(s.num_cache_checked, num_full)

    def _emit_cache(self, seq_id: int, s: "_SeqState", run: list[int], token_ids: Sequence[int]) -> None:
        bs = self.block_size
        i0, i1 = run[0], run[-1] + 1
        self._emit(Cache(seq_id, tuple(s.table[i0:i1]), tuple(s.block_hashes[i0:i1]),
                         s.block_hashes[i0 - 1] if i0 else None, tuple(token_ids[i0 * bs:i1 * bs])))

    def fork(self, parent_seq_id: int, child_seq_id: int) -> None:
        """The child shares every block of the parent (refcount + 1, nothing copied)."""
        p = self._seq(parent_seq_id)
        if child_seq_id in self._seqs:
            raise ValueError(f"seq_id {child_seq_id} already has blocks")
        blocks = [self.pool.blocks[b] for b in p.table]
        self.pool.touch(blocks)
        for bid in p.table:
            self._add_owner(bid, child_seq_id)
        tokens = None if p.token_ids is None else list(p.token_ids)
        self._seqs[child_seq_id] = _SeqState(list(p.table), p.num_tokens, p.root,
                                             list(p.block_hashes), p.num_cache_checked, tokens)
        self.num_table_entries += len(p.table)
        self._emit(Fork(parent_seq_id, child_seq_id, tuple(p.table)))

    def free(self, seq_id: int) -> None:
        """Drop the sequence's references, last block first: freed blocks join the free
        queue in that order, so the LRU evicts the ends of sequences before their
        (more shareable) beginnings."""
        s = self._seq(seq_id)
        del self._seqs[seq_id]
        order = s.table[::-1]
        released = []
        for bid in order:
            self._remove_owner(bid, seq_id)
            if self.pool.release(self.pool.blocks[bid]):
                released.append(bid)
        self.num_table_entries -= len(order)
        self._emit(Free(seq_id, tuple(order), tuple(released)))

    def reset_prefix_cache(self) -> int:
        """Forget every cached-free block (e.g. after swapping weights); returns how many."""
        return self.pool.reset_prefix_cache()

    # ----------------------------------------------------------------- views
    def stats(self) -> KVStats:
        pool = self.pool
        used = pool.num_used
        allocated = used * self.block_size
        return KVStats(
            num_blocks=self.num_blocks, block_size=self.block_size, used=used,
            cached_free=pool.num_cached_free, free=pool.num_free - pool.num_cached_free,
            usage_perc=used / self.num_blocks,
            waste=(allocated - pool.used_fill) / allocated if allocated else 0.0,
            shared=pool.num_shared, num_seqs=len(self._seqs), allocated_slots=allocated,
            filled_slots=pool.used_fill, prefix_cache_queries=self.prefix_cache_queries,
            prefix_cache_hits=self.prefix_cache_hits, num_cow_copies=self.num_cow_copies,
            num_evictions=pool.num_evictions)

    def blocks_snapshot(self) -> BlocksSnapshot:
        """Per-block arrays for the GUI: O(num_blocks) memcpy, no Python loop. Fill is
        in tokens (`num_tokens`); a view divides by `block_size` itself."""
        pool = self.pool
        ref = pool.ref_cnt.copy()
        cached = pool.is_cached.copy()
        return BlocksSnapshot(self.block_size, ref, self._owner.copy(), pool.fill.copy(),
                              cached, cached & (ref == 0))

    def block_info(self, block_id: int) -> BlockInfo:
        block_id = _check_int("block_id", block_id, 0, self.num_blocks - 1)
        block = self.pool.blocks[block_id]
        owners = tuple(self._owners.get(block_id, ()))
        fill = int(self.pool.fill[block_id])
        tokens = block.token_ids
        if tokens is None and owners:
            s = self._seqs[owners[0]]
            if s.token_ids is not None:
                start = s.table.index(block_id) * self.block_size
                tokens = tuple(s.token_ids[start:start + fill])
        return BlockInfo(block_id, block.ref_cnt, owners, block.block_hash, fill, tokens,
                         self.pool.free_queue.contains(block),
                         block.ref_cnt == 0 and block.block_hash is not None)

    def check_invariants(self) -> None:
        from .invariants import check_invariants
        check_invariants(self)
