"""The cache model: forest shape, bounded token memory, churn, the views' arrays."""

from __future__ import annotations

import numpy as np

from tinyserve_core.attach.cache_model import CacheModel


def test_parent_coming_back_relinks_its_children():
    m = CacheModel()
    m.store(0, [1, 2, 3], None, [], 2, "GPU", 1.0)
    m.remove(0, [1], "GPU", 2.0)
    assert m.forest_counts() == (1, 2)                 # 2-3 is a tree of its own
    m.store(0, [1], None, [], 2, "GPU", 3.0)           # the root is stored again
    assert m.forest_counts() == (1, 3)
    assert m.unknown_removals == 0
    m.remove(0, [99], None, 4.0)                       # never seen: counted, nothing breaks
    assert m.unknown_removals == 1 and m.blocks_live == 3


def test_same_hash_on_two_media_are_two_blocks():
    m = CacheModel()
    m.store(0, [5], None, [], 2, "GPU", 1.0)
    m.store(0, [5], None, [], 2, "CPU", 1.0)           # offloaded copy
    m.remove(0, [5], "GPU", 2.0)
    assert m.live_by_medium() == {"CPU": 1}
    m.store(0, [6], None, [], 2, "NVME-X", 2.0)        # a medium we do not know by name
    assert m.live_by_medium() == {"CPU": 1, "NVME-X": 1}


def test_junk_parent_cycles_do_not_hang():
    m = CacheModel()
    m.store(0, [1], 2, [], 2, "GPU", 1.0)
    m.store(0, [2], 1, [], 2, "GPU", 1.0)              # 1 -> 2 -> 1
    m.block_map()
    m.forest_counts()


def test_token_memory_is_capped():
    m = CacheModel(token_blocks_cap=6, max_token_bytes=40)
    m.store(0, [1, 2, 3, 4], None, list(range(16)), 4, "GPU", 1.0)
    assert [m.tokens(int(s)) for s in m.block_map().slot] == [(0, 1, 2, 3), (4, 5, 6, 7),
                                                               (8, 9, 10, 11), (12, 13, 14, 15)]
    m.store(0, [5, 6, 7], None, list(range(12)), 4, "GPU", 1.0)      # would pass the block cap
    m.store(0, [8], None, list(range(1000, 1040)), 40, "GPU", 1.0)   # over the byte cap
    assert m.token_blocks == 4 and m.tokens(4) is None and m.tokens(7) is None
    m.remove(0, [1, 2], "GPU", 2.0)                                  # frees room
    m.store(0, [9], None, [7, 7, 7, 7], 4, "GPU", 2.0)
    assert m.token_blocks == 3 and m.detail(int(m.block_map().slot[-1])).token_ids in ((7, 7, 7, 7), None)
    assert (7, 7, 7, 7) in [m.tokens(int(s)) for s in m.block_map().slot]


def test_block_map_arrays_and_slot_reuse():
    m = CacheModel(capacity=2)
    n = 5000
    m.store(0, list(range(n)), None, [], 16, "GPU", 10.0)     # one deep chain, grows storage
    m.store(1, list(range(10)), None, [], 16, "CPU", 12.0)
    m.store(0, [0], None, [], 16, "GPU", 12.0)                # reuse of the root
    bm = m.block_map()
    assert len(bm) == n + 10 and bm.capacity == n + 10
    assert bm.depth.max() == n and np.array_equal(np.sort(bm.depth[bm.rank == 0]), np.arange(1, n + 1))
    assert len(np.unique(bm.root)) == 2
    assert bm.media[bm.medium[bm.rank == 1][0]] == "CPU"
    root = bm.slot[(bm.rank == 0) & (bm.depth == 1)][0]
    assert bm.reuse[bm.slot == root][0] == 1 and bm.idle_s[bm.slot == root][0] == 0
    assert bm.age_s[bm.slot == root][0] == 2.0
    m.remove(0, [n - 1], "GPU", 13.0)
    m.store(0, [10**9], None, [], 16, "GPU", 13.0)            # takes the freed slot
    assert m.block_map().capacity == n + 10
    snap = m.blocks_snapshot(16)
    assert (snap.ref_cnt[snap.is_cached] == -1).all() and snap.num_blocks == n + 10


def test_churn_per_second():
    m = CacheModel(churn_seconds=4)
    m.store(0, [1, 2], None, [], 2, "GPU", 100.2)
    m.store(0, [3], None, [], 2, "GPU", 100.9)
    m.remove(0, [1], "GPU", 102.5)
    m.clear(0, 102.7)
    c = m.churn()
    assert c.t.tolist() == [100, 101, 102]
    assert c.stored.tolist() == [3, 0, 0] and c.removed.tolist() == [0, 0, 1] and c.cleared.tolist() == [0, 0, 2]
    assert c.live[0] == 3 and np.isnan(c.live[1]) and c.live[2] == 0
    m.store(0, [9], None, [], 2, "GPU", 105.0)                # the ring keeps the last 4 s
    assert m.churn().t.tolist() == [102, 103, 104, 105]


def test_incremental_forest_matches_a_walk_by_hash():
    """Depth and root kept up to date at store time (and recomputed after removals of
    inner blocks or a parent's return) equal a plain walk over live hashes."""
    rng = np.random.default_rng(7)
    m = CacheModel(capacity=4)
    parent_of: dict[int, int | None] = {}      # live hash -> parent hash
    next_h = 1
    for step in range(300):
        r = rng.random()
        live = list(parent_of)
        if r < 0.55 or not live:
            parent = int(rng.choice(live)) if live and rng.random() < 0.6 else None
            if parent is None and parent_of and rng.random() < 0.2:
                parent = -int(rng.integers(1, 50))          # a parent never seen (late join)
            n = int(rng.integers(1, 5))
            hashes = list(range(next_h, next_h + n))
            next_h += n
            m.store(0, hashes, parent, [], 2, "GPU", float(step))
            for i, h in enumerate(hashes):
                parent_of[h] = parent if i == 0 else hashes[i - 1]
        elif r < 0.9:
            gone = [int(h) for h in rng.choice(live, size=min(len(live), int(rng.integers(1, 4))), replace=False)]
            m.remove(0, gone, "GPU", float(step))
            for h in gone:
                del parent_of[h]
        else:                                               # a removed hash comes back
            h = next_h - int(rng.integers(1, 10))
            if h > 0 and h not in parent_of:
                m.store(0, [h], None, [], 2, "GPU", float(step))
                parent_of[h] = None
        if step % 7 == 0 or step == 299:
            bm = m.block_map()
            got = {m.detail(int(s)).block_hash: (int(d), int(rt)) for s, d, rt in zip(bm.slot, bm.depth, bm.root)}

            def walk(h):
                d, root = 1, h
                while parent_of.get(root) in parent_of:
                    root = parent_of[root]
                    d += 1
                return d, root
            want = {h: walk(h) for h in parent_of}
            assert {h: d for h, (d, _) in got.items()} == {h: d for h, (d, _) in want.items()}
            same_root = {}
            for h, (_, rt) in got.items():
                assert same_root.setdefault(want[h][1], rt) == rt
