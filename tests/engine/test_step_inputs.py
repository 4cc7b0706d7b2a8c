"""Decode inputs built incrementally in persistent tensors equal those built from the
block-table lists each step; host and device time of a step are reported."""

from __future__ import annotations

import random

import torch

from tinyserve_core.engine.step_inputs import DecodeInputs


def _from_lists(tables, positions, bs, width):
    out = torch.zeros(len(tables), width, dtype=torch.int32)
    for i, t in enumerate(tables):
        out[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
    slots = [t[p // bs] * bs + p % bs for t, p in zip(tables, positions)]
    return out, slots


def test_incremental_tables_equal_tables_from_lists_through_growth_cow_and_rewrites():
    rng = random.Random(0)
    bs, max_pages = 4, 32
    inp = DecodeInputs(bs, max_pages, pin=False)
    live: dict[int, list[int]] = {}
    lens: dict[int, int] = {}
    next_block, next_seq = 1000, 0
    for step in range(300):
        if len(live) < 20 and rng.random() < 0.3:       # a new sequence (prefill writes its row whole)
            n = rng.randint(1, 40)
            live[next_seq] = list(range(next_block, next_block + -(-(n + 1) // bs)))
            next_block += 64
            lens[next_seq] = n
            inp.tables_rows.row(next_seq, live[next_seq], rewrite=True)
            next_seq += 1
        for s in list(live):
            r = rng.random()
            if r < 0.05:                                 # finished
                del live[s], lens[s]
                inp.tables_rows.release(s)
                continue
            if r < 0.1:                                  # copy-on-write of the last block
                live[s][-1] = next_block
                next_block += 1
            lens[s] += 1
            while len(live[s]) * bs < lens[s] + 1 and len(live[s]) < max_pages:
                live[s].append(next_block)
                next_block += 1
            if len(live[s]) * bs < lens[s] + 1:          # at the longest context: done
                del live[s], lens[s]
                inp.tables_rows.release(s)
        if not live:
            continue
        ids = sorted(live, key=lambda _: rng.random())  # the batch order changes
        tables = [list(live[s]) for s in ids]
        positions = [lens[s] for s in ids]
        padded = len(ids) + rng.randint(0, 3)
        ints, tab = inp.build(ids, tables, [7] * len(ids), positions, padded=padded)
        want_tab, want_slots = _from_lists(tables, positions, bs, tab.shape[1])
        assert torch.equal(tab[:len(ids)], want_tab)
        assert ints[2, :len(ids)].tolist() == want_slots and ints[1, :len(ids)].tolist() == positions
        assert (ints[2, len(ids):] == -1).all() and (tab[len(ids):] == 0).all()
        assert (ints[1, len(ids):] == 0).all()


def test_a_table_shorter_than_its_position_is_refused_by_name():
    import pytest
    inp = DecodeInputs(4, 16, pin=False)
    ints, tab = inp.build([3, 9], [[5, 6], [7]], [1, 2], [7, 3])
    assert ints[2].tolist() == [6 * 4 + 3, 7 * 4 + 3] and tab.tolist() == [[5, 6], [7, 0]]
    with pytest.raises(ValueError, match="seq 9: block table has 1 blocks, 5 tokens need 2"):
        inp.build([3, 9], [[5, 6], [7]], [1, 2], [7, 4])


def test_graph_width_fits_the_tables_only_for_width_bound_selectors():
    from types import SimpleNamespace

    from tinyserve_core.engine.cuda_graphs import DecodeGraphs
    from tinyserve_core.selection import PageSelector
    graphs = SimpleNamespace(min_width=128)
    width = lambda sel, pages: DecodeGraphs._width(graphs, sel, pages)   # noqa: E731
    assert PageSelector("quest", budget=0.25, stats=True).width_bound
    assert not PageSelector("quest", budget=0.25).width_bound
    assert not PageSelector("quest", budget=0.25, tier_pages=4).width_bound
    stats = PageSelector("quest", budget=0.25, stats=True)
    assert [width(stats, p) for p in (1, 9, 16, 17, 45, 128)] == [16, 16, 16, 32, 64, 128]
    assert [width(None, p) for p in (1, 45, 128)] == [128, 128, 128]
    assert width(PageSelector("quest", budget=0.25), 45) == 128
