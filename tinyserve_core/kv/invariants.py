"""Full consistency check of a BlockManager: O(num_blocks + table entries), for tests.

Recomputes everything the manager keeps incrementally (refcounts, counters, numpy
mirrors, owners, fill, waste) from the block tables and the free queue, and asserts
that the two agree."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .block_manager import BlockManager


def check_invariants(bm: "BlockManager") -> None:
    pool = bm.pool
    bs = bm.block_size
    n = bm.num_blocks

    # free queue: no duplicates, links consistent, exactly the ref-0 blocks
    queued = []
    prev = pool.free_queue._head
    for block in pool.free_queue:
        assert block.prev_free_block is prev, f"broken back link at block {block.block_id}"
        queued.append(block.block_id)
        prev = block
    assert len(queued) == len(set(queued)), "a block is in the free queue twice"
    assert len(queued) == pool.num_free, f"queue length {len(queued)} != num_free {pool.num_free}"
    in_queue = np.zeros(n, np.bool_)
    in_queue[queued] = True
    refs = np.array([b.ref_cnt for b in pool.blocks], np.int64)
    assert (refs >= 0).all(), "negative refcount"
    assert np.array_equal(in_queue, refs == 0), (
        "refcount 0 must mean exactly 'in the free queue': mismatched blocks "
        f"{np.flatnonzero(in_queue != (refs == 0))[:10].tolist()}")
    for block in pool.blocks:
        if not in_queue[block.block_id]:
            assert block.prev_free_block is None and block.next_free_block is None

    # tables: refcount of each block == number of tables holding it
    entries: Counter[int] = Counter()
    owners: dict[int, set[int]] = {}
    expected_fill = np.zeros(n, np.int64)
    for seq_id, s in bm._seqs.items():
        assert len(s.table) == -(-s.num_tokens // bs), f"seq {seq_id}: table length wrong"
        assert len(set(s.table)) == len(s.table), f"seq {seq_id} holds a block twice"
        for i, bid in enumerate(s.table):
            entries[bid] += 1
            owners.setdefault(bid, set()).add(seq_id)
            f = min(bs, s.num_tokens - i * bs)
            if entries[bid] > 1:
                assert expected_fill[bid] == f, (
                    f"shared block {bid} holds {expected_fill[bid]} tokens for one owner, "
                    f"{f} for seq {seq_id}")
            expected_fill[bid] = f
    total_entries = sum(entries.values())
    assert int(refs.sum()) == total_entries == bm.num_table_entries, (
        f"sum of refcounts {int(refs.sum())} != table entries {total_entries} "
        f"(tracked {bm.num_table_entries})")
    for block in pool.blocks:
        assert block.ref_cnt == entries.get(block.block_id, 0), (
            f"block {block.block_id}: ref {block.ref_cnt}, in {entries.get(block.block_id, 0)} tables")

    # hash map: one entry per hashed block, pointing back at it
    hashed = [b for b in pool.blocks if b.block_hash is not None]
    assert len(hashed) == len(pool.cached_blocks), "hashed blocks != hash map entries"
    for h, block in pool.cached_blocks.items():
        assert block.block_hash == h, f"map entry {h:x} points at block {block.block_id} with another hash"
    for block in hashed:
        assert pool.cached_blocks.get(block.block_hash) is block, f"block {block.block_id} not in map"
        assert block.token_ids is not None and len(block.token_ids) == bs
    if not bm.enable_prefix_caching:
        assert not hashed, "prefix caching is off but blocks are hashed"

    # numpy mirrors
    assert np.array_equal(pool.ref_cnt, refs), "ref_cnt array out of sync"
    is_cached = np.array([b.block_hash is not None for b in pool.blocks], np.bool_)
    assert np.array_equal(pool.is_cached, is_cached), "is_cached array out of sync"
    used = refs > 0
    fill_expected = np.where(used, expected_fill, np.where(is_cached, bs, 0))
    assert np.array_equal(pool.fill, fill_expected), (
        f"fill out of sync at {np.flatnonzero(pool.fill != fill_expected)[:10].tolist()}")
    for bid in range(n):
        o = bm._owners.get(bid)
        assert set(o or ()) == owners.get(bid, set()), f"owners of block {bid} wrong"
        assert bm._owner[bid] == (next(iter(o)) if o else -1), f"owner array wrong at {bid}"

    # counters and the figures derived from them
    assert pool.num_used == int(used.sum()), "used-block counter (usage) out of sync"
    assert pool.num_shared == int((refs > 1).sum()), "shared-block counter out of sync"
    assert pool.num_cached_free == int((~used & is_cached).sum()), "cached-free counter out of sync"
    assert pool.used_fill == int(expected_fill[used].sum()), (
        "filled-slot counter (waste) disagrees with the tables")
    st = bm.stats()
    assert st.used + st.cached_free + st.free == n
    assert abs(st.usage_perc - used.sum() / n) < 1e-12
    slots = int(used.sum()) * bs
    waste = (slots - int(expected_fill[used].sum())) / slots if slots else 0.0
    assert abs(st.waste - waste) < 1e-12, f"waste {st.waste} != {waste} from the tables"
    assert 0 <= st.prefix_cache_hits <= st.prefix_cache_queries
