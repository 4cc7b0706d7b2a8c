import numpy as np
import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.kv import BlockManager, NoFreeBlocksError
from tinyserve_core.observe.events import Alloc, CowCopy, EventSink, Evict, Fork, Free, PrefixHit


def make(num_blocks=16, block_size=4, **kw):
    sink = EventSink()
    return BlockManager(num_blocks, block_size, sink=sink, **kw), sink


def prefill(bm, seq_id, tokens, salt=None):
    """allocate + pretend the step computed the whole prompt."""
    cached = bm.allocate(seq_id, tokens, salt)
    bm.cache_full_blocks(seq_id, tokens, len(tokens))
    bm.check_invariants()
    return cached


def kinds(events):
    return [e.kind for e in events]


@pytest.mark.parametrize("bs", [0, -4, 3, 12, 256, 1.5, True, "16", None])
def test_bad_block_size_names_the_field(bs):
    with pytest.raises(ConfigError) as err:
        BlockManager(8, bs)
    assert err.value.field == "block_size"


@pytest.mark.parametrize("nb", [0, -1, 2.0, None])
def test_bad_num_blocks_names_the_field(nb):
    with pytest.raises(ConfigError) as err:
        BlockManager(nb, 16)
    assert err.value.field == "num_blocks"


@pytest.mark.parametrize("bs", [1, 2, 4, 8, 16, 32, 64, 128])
def test_every_power_of_two_block_size_works(bs):
    bm = BlockManager(4, bs)
    bm.allocate(0, list(range(bs + 1)))
    assert len(bm.block_table(0)) == 2
    assert bm.append_slot(0, 2 * bs + 1) == []
    assert len(bm.block_table(0)) == 3
    bm.check_invariants()


def test_empty_prompt_is_rejected():
    bm, _ = make()
    with pytest.raises(ConfigError, match="token_ids"):
        bm.allocate(0, [])


def test_allocate_gives_fresh_blocks_with_fill_and_alloc_event():
    bm, sink = make(num_blocks=8, block_size=4)
    assert bm.allocate(7, list(range(10))) == 0
    table = bm.block_table(7)
    assert len(table) == 3 and len(set(table)) == 3
    snap = bm.blocks_snapshot()
    assert snap.num_tokens[table].tolist() == [4, 4, 2]
    assert snap.ref_cnt[table].tolist() == [1, 1, 1]
    assert snap.owner[table].tolist() == [7, 7, 7]
    assert sink.drain() == [Alloc(7, tuple(table))]
    st = bm.stats()
    assert (st.used, st.free, st.cached_free) == (3, 5, 0)
    assert st.usage_perc == 3 / 8 and st.waste == pytest.approx(2 / 12)
    with pytest.raises(ValueError):
        bm.allocate(7, [1])
    bm.check_invariants()


def test_prefix_hit_reuses_full_blocks_and_counts_tokens():
    bm, sink = make(block_size=4)
    a = list(range(100, 110))
    prefill(bm, 0, a)
    sink.drain()
    b = a[:9] + [999, 998]
    assert bm.blocks_needed(b) == 1 and bm.cached_prefix_len(b) == 8
    assert bm.allocate(1, b) == 8
    tb, ta = bm.block_table(1), bm.block_table(0)
    assert tb[:2] == ta[:2] and tb[2] != ta[2]
    ev = sink.drain()
    assert ev[0] == PrefixHit(1, tuple(ta[:2]), 8) and ev[1] == Alloc(1, (tb[2],))
    st = bm.stats()
    assert (st.prefix_cache_queries, st.prefix_cache_hits) == (21, 8)
    assert st.shared == 2
    bm.check_invariants()


def test_whole_prompt_is_never_a_hit_the_last_token_is_recomputed():
    bm, _ = make(block_size=4)
    a = list(range(8))
    prefill(bm, 0, a)
    # 8 tokens cached, but the last one must be computed: only the first block hits
    assert bm.allocate(1, a) == 4
    assert bm.block_table(1)[0] == bm.block_table(0)[0]
    assert bm.block_table(1)[1] != bm.block_table(0)[1]
    assert bm.allocate(2, a + [8]) == 8
    bm.check_invariants()


def test_uncomputed_blocks_are_not_hit():
    bm, _ = make(block_size=4)
    a = list(range(9))
    bm.allocate(0, a)  # not yet computed: no cache_full_blocks
    assert bm.allocate(1, a) == 0
    bm.cache_full_blocks(0, a, 4)  # only the first block computed so far
    assert bm.allocate(2, a) == 4
    bm.check_invariants()


def test_salt_separates_caches():
    bm, _ = make(block_size=4)
    a = list(range(9))
    prefill(bm, 0, a, salt="tenant-a")
    assert bm.allocate(1, a) == 0
    assert bm.allocate(2, a, salt="tenant-b") == 0
    assert bm.allocate(3, a, salt="tenant-a") == 8
    bm.check_invariants()


def test_fork_shares_every_block_and_cow_returns_the_copies():
    bm, sink = make(num_blocks=16, block_size=4)
    prefill(bm, 0, list(range(6)))  # blocks: full + 2 tokens
    parent = bm.block_table(0)
    sink.drain()
    bm.fork(0, 1)
    bm.fork(0, 2)
    assert bm.block_table(1) == bm.block_table(2) == parent
    assert bm.blocks_snapshot().ref_cnt[parent].tolist() == [3, 3]
    assert sink.drain() == [Fork(0, 1, tuple(parent)), Fork(0, 2, tuple(parent))]
    bm.check_invariants()

    free_before = bm.num_free_blocks
    pairs = bm.append_slot(0, 7)  # token 6 goes into the shared partial block
    t0 = bm.block_table(0)
    assert pairs == [(parent[1], t0[1])] and t0[0] == parent[0] and t0[1] != parent[1]
    assert bm.num_free_blocks == free_before - 1
    assert sink.drain() == [Alloc(0, (t0[1],)), CowCopy(0, parent[1], t0[1])]
    snap = bm.blocks_snapshot()
    assert snap.num_tokens[t0[1]] == 3 and snap.num_tokens[parent[1]] == 2
    assert snap.ref_cnt[parent[1]] == 2
    bm.check_invariants()

    assert bm.append_slot(1, 7) != []   # still shared with seq 2: copies
    assert bm.append_slot(2, 7) == []   # now the only owner: writes in place
    assert bm.block_table(2) == parent
    assert bm.stats().num_cow_copies == 2
    bm.check_invariants()


def test_append_at_a_block_boundary_takes_a_new_block_without_copy():
    bm, sink = make(block_size=4)
    prefill(bm, 0, list(range(8)))
    bm.fork(0, 1)
    sink.drain()
    assert bm.append_slot(1, 9) == []
    t1 = bm.block_table(1)
    assert t1[:2] == bm.block_table(0) and len(t1) == 3
    assert sink.drain() == [Alloc(1, (t1[2],))]
    # growing by several tokens at once spans several blocks
    assert bm.append_slot(1, 17) == [] and len(bm.block_table(1)) == 5
    assert bm.append_slot(1, 17) == []  # already has the slot
    with pytest.raises(ValueError):
        bm.append_slot(1, 3)
    bm.check_invariants()


def test_try_append_slot_says_none_and_changes_nothing_when_the_pool_is_dry():
    bm, sink = make(num_blocks=3, block_size=4)
    bm.allocate(0, list(range(6)))
    bm.allocate(1, list(range(50, 54)))
    bm.fork(0, 2)
    sink.drain()
    before = (bm.block_table(0), bm.block_table(1), bm.num_tokens(0), bm.num_tokens(1), bm.num_free_blocks)
    assert bm.try_append_slot(1, 5) is None            # a boundary: needs a block
    assert bm.try_append_slot(0, 7) is None            # shared partial block: needs a CoW copy
    assert (bm.block_table(0), bm.block_table(1), bm.num_tokens(0), bm.num_tokens(1),
            bm.num_free_blocks) == before and sink.drain() == []
    with pytest.raises(NoFreeBlocksError, match="needs 1 blocks, 0 free"):
        bm.append_slot(0, 7)
    bm.free(1)
    pairs = bm.try_append_slot(0, 7)
    assert len(pairs) == 1 and bm.num_tokens(0) == 7 and bm.live_table(0) == bm.block_table(0)
    assert bm.live_table(0) is bm.live_table(0)          # the table itself, no copy
    bm.check_invariants()


def test_can_append_and_exhaustion():
    bm, _ = make(num_blocks=3, block_size=4)
    bm.allocate(0, list(range(6)))
    bm.allocate(1, list(range(50, 54)))
    assert bm.num_free_blocks == 0
    assert bm.can_append(0)            # room in its own partial block
    assert not bm.can_append(1)        # at a boundary, no free block
    with pytest.raises(NoFreeBlocksError):
        bm.append_slot(1, 5)
    bm.fork(0, 2)
    assert not bm.can_append(0)        # partial block shared: would need a CoW copy
    with pytest.raises(NoFreeBlocksError):
        bm.append_slot(0, 7)
    bm.check_invariants()
    bm.free(1)
    assert bm.can_append(0)
    assert len(bm.append_slot(0, 7)) == 1
    bm.check_invariants()


def test_free_goes_in_reverse_and_reports_released_blocks():
    bm, sink = make(block_size=4)
    prefill(bm, 0, list(range(10)))
    bm.fork(0, 1)
    t = bm.block_table(0)
    sink.drain()
    bm.free(0)
    assert sink.drain() == [Free(0, tuple(reversed(t)), ())]
    bm.free(1)
    assert sink.drain() == [Free(1, tuple(reversed(t)), tuple(reversed(t)))]
    st = bm.stats()
    assert (st.used, st.cached_free, st.shared, st.num_seqs) == (0, 2, 0, 0)
    with pytest.raises(KeyError):
        bm.free(1)
    bm.check_invariants()


def test_lazy_eviction_in_lru_order_tail_blocks_first():
    bm, sink = make(num_blocks=4, block_size=4)
    a, b = list(range(8)), list(range(100, 108))
    prefill(bm, 0, a)
    prefill(bm, 1, b)
    ta, tb = bm.block_table(0), bm.block_table(1)
    bm.free(0)
    bm.free(1)
    st = bm.stats()
    assert (st.cached_free, st.free) == (4, 0)
    # freed blocks keep their hashes: a hit still works with no recompute
    assert bm.cached_prefix_len(a + [1]) == 8 and bm.cached_prefix_len(b + [1]) == 8
    sink.drain()
    # eviction order: a's tail, a's head, b's tail, b's head
    expected = [ta[1], ta[0], tb[1], tb[0]]
    for k, blk in enumerate(expected):
        bm.allocate(10 + k, [1000 + k])
        assert bm.block_table(10 + k) == [blk]
        ev = sink.drain()
        assert isinstance(ev[0], Evict) and ev[0].block_id == blk
        bm.check_invariants()
    assert bm.stats().num_evictions == 4
    assert bm.cached_prefix_len(a + [1]) == 0


def test_prefix_hit_revives_a_cached_free_block_from_the_middle_of_the_queue():
    bm, _ = make(num_blocks=6, block_size=4)
    a = list(range(12))
    prefill(bm, 0, a)
    bm.free(0)          # queue: 3 truly free, then a2, a1, a0 (cached)
    assert bm.num_free_blocks == 6
    assert bm.can_allocate(a[:9]) and bm.blocks_needed(a[:9]) == 1
    assert bm.allocate(1, a[:9]) == 8
    st = bm.stats()
    assert (st.used, st.cached_free, st.free) == (3, 1, 2)
    bm.check_invariants()
    # uncached blocks are reused before any cached one: a's last block survives
    bm.allocate(2, [7, 7, 7, 7, 7, 7, 7, 7])
    assert bm.stats().cached_free == 1 and bm.stats().num_evictions == 0
    bm.check_invariants()


def test_can_allocate_counts_hits_on_cached_free_blocks():
    bm, _ = make(num_blocks=3, block_size=4)
    a = list(range(9))
    prefill(bm, 0, a)
    bm.free(0)
    bm.allocate(1, [5])             # takes the one uncached block
    # a needs its 2 cached-free blocks back plus 1 fresh, but only 2 are free
    assert bm.blocks_needed(a) == 1 and not bm.can_allocate(a)
    before = bm.stats()
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(2, a)
    assert bm.stats() == before and not bm.has_seq(2)
    bm.check_invariants()


def test_duplicate_full_block_stays_uncached_and_map_is_intact():
    bm, _ = make(block_size=4)
    a = list(range(9))
    bm.allocate(0, a)
    bm.allocate(1, a)  # neither computed yet: both get fresh blocks
    bm.cache_full_blocks(0, a, 9)
    bm.cache_full_blocks(1, a, 9)
    t0, t1 = bm.block_table(0), bm.block_table(1)
    snap = bm.blocks_snapshot()
    assert snap.is_cached[t0[:2]].all() and not snap.is_cached[t1[:2]].any()
    bm.check_invariants()
    bm.free(0)
    bm.free(1)
    st = bm.stats()
    assert (st.cached_free, st.free) == (2, 14)
    bm.check_invariants()


def test_hashes_chain_across_prompt_and_generated_tokens_and_across_fork():
    bm, _ = make(block_size=4)
    toks = list(range(6))
    prefill(bm, 0, toks)
    for t in (6, 7, 8):
        bm.append_slot(0, len(toks) + 1)
        toks.append(t)
        bm.cache_full_blocks(0, toks, len(toks))
    bm.fork(0, 1)
    child = list(toks)
    for t in (20, 21, 22, 23):
        bm.append_slot(1, len(child) + 1)
        child.append(t)
        bm.cache_full_blocks(1, child, len(child))
    bm.check_invariants()
    # a new prompt equal to the child's first 12 tokens hits all three blocks
    assert bm.cached_prefix_len(child[:12] + [0]) == 12
    assert bm.cached_prefix_len(toks[:8] + [99, 99, 99, 99, 0]) == 8


def test_prefix_caching_off_never_hashes_or_hits():
    bm, sink = make(block_size=4, enable_prefix_caching=False)
    a = list(range(9))
    prefill(bm, 0, a)
    assert bm.allocate(1, a) == 0
    bm.free(0)
    assert bm.stats().cached_free == 0 and bm.stats().prefix_cache_hits == 0
    assert not any(isinstance(e, PrefixHit) for e in sink.drain())
    bm.check_invariants()


def test_snapshot_owner_fill_evictable_and_block_info():
    bm, _ = make(num_blocks=8, block_size=4)
    a = list(range(10, 20))
    prefill(bm, 3, a)
    bm.fork(3, 5)
    t = bm.block_table(3)
    snap = bm.blocks_snapshot()
    assert snap.num_blocks == 8 and snap.ref_cnt.dtype == np.int32
    assert snap.owner[t].tolist() == [3, 3, 3]
    info = bm.block_info(t[2])
    assert info.owners == (3, 5) and info.fill == 2 and info.token_ids == (18, 19)
    assert info.block_hash is None and not info.in_free_queue
    bm.free(3)
    assert bm.blocks_snapshot().owner[t].tolist() == [5, 5, 5]
    assert snap.owner[t].tolist() == [3, 3, 3]   # earlier snapshot is a copy
    bm.free(5)
    snap = bm.blocks_snapshot()
    assert snap.owner[t].tolist() == [-1, -1, -1]
    assert snap.evictable[t].tolist() == [True, True, False]
    assert snap.num_tokens[t].tolist() == [4, 4, 0]
    info = bm.block_info(t[1])
    assert info.evictable and info.in_free_queue and info.ref_cnt == 0
    assert info.token_ids == (14, 15, 16, 17) and info.block_hash is not None
    with pytest.raises(ConfigError, match="block_id"):
        bm.block_info(8)


def test_reset_prefix_cache_drops_only_free_cached_blocks():
    bm, _ = make(block_size=4)
    prefill(bm, 0, list(range(9)))
    prefill(bm, 1, list(range(50, 59)))
    bm.free(0)
    assert bm.reset_prefix_cache() == 2
    st = bm.stats()
    assert st.cached_free == 0 and bm.cached_prefix_len(list(range(9))) == 0
    assert bm.cached_prefix_len(list(range(50, 59))) == 8
    bm.check_invariants()


def test_check_invariants_catches_corruption():
    bm, _ = make(block_size=4)
    prefill(bm, 0, list(range(9)))
    bm.pool.blocks[bm.block_table(0)[0]].ref_cnt += 1
    with pytest.raises(AssertionError):
        bm.check_invariants()
    bm2, _ = make(block_size=4)
    prefill(bm2, 0, list(range(9)))
    bm2.pool.used_fill += 1
    with pytest.raises(AssertionError, match="waste"):
        bm2.check_invariants()


def test_cache_events_report_each_newly_hashed_chain_once():
    from tinyserve_core.kv.hashing import hash_prompt_blocks
    from tinyserve_core.observe.events import Cache
    sink = EventSink()
    bm = BlockManager(16, 4, sink=sink)
    toks = list(range(10))
    bm.allocate(1, toks)
    sink.drain()
    bm.cache_full_blocks(1, toks, 10)
    (ev,) = [e for e in sink.drain() if isinstance(e, Cache)]
    hashes = hash_prompt_blocks(toks, 4)
    assert ev.block_hashes == tuple(hashes) and ev.parent_hash is None
    assert ev.block_ids == tuple(bm.block_table(1)[:2]) and ev.token_ids == tuple(range(8))
    bm.cache_full_blocks(1, toks, 10)                 # nothing new: no event
    assert not [e for e in sink.drain() if isinstance(e, Cache)]
    longer = toks[:8] + [50, 51, 52, 53, 54]          # hits both cached blocks
    bm.allocate(2, longer)
    bm.cache_full_blocks(2, longer, 13)
    (ev2,) = [e for e in sink.drain() if isinstance(e, Cache)]
    # blocks 0-1 are hits (already cached); block 2 continues the chain from hash[1]
    assert ev2.parent_hash == hashes[1] and len(ev2.block_hashes) == 1
