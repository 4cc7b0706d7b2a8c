"""Decode inputs built incrementally in persistent tensors equal those built from the
block-table lists each step; host and device time of a step are reported."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from tinyserve_core.engine.step_inputs import DecodeInputs, TableRows


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
    rows = inp.tables_rows
    rows.dev = rows.rows.clone()   # a separate mirror, as on a GPU: only what changed is copied
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
        items = [SimpleNamespace(seq_id=s, token_id=7, position=lens[s], block_table=list(live[s])) for s in ids]
        ints = inp.stage(items, padded=padded)
        assert torch.equal(rows.dev, rows.rows)        # the mirror holds every change
        tab = inp.table(ints[3], max_pages)
        want_tab, want_slots = _from_lists(tables, positions, bs, max_pages)
        assert torch.equal(tab[:len(ids)], want_tab)
        assert ints[2, :len(ids)].tolist() == want_slots and ints[1, :len(ids)].tolist() == positions
        assert ints[0, :len(ids)].tolist() == [7] * len(ids)
        assert (ints[2, len(ids):] == -1).all() and (ints[:2, len(ids):] == 0).all()


def test_an_unchanged_step_copies_nothing_and_growth_is_announced():
    rows = TableRows(8, pin=False, capacity=2)
    rows.row(0, [5, 6], rewrite=True)
    rows.sync()
    rows.row(0, [5, 6])
    assert rows._dirty == []                          # the common step: nothing to copy
    rows.row(0, [5, 6, 9])
    assert rows._dirty == [(rows.row_of[0], 2, 3)]
    gen = rows.generation
    rows.row(1, [1])
    rows.row(2, [2])                                  # a third sequence outgrows two rows
    assert rows.generation == gen + 1 and rows.rows.shape[0] == 4
    assert rows.rows[rows.row_of[0], :3].tolist() == [5, 6, 9]


def test_stage_vets_each_table_with_the_check():
    inp = DecodeInputs(4, 8, pin=False)

    def check(seq_id, table, tokens):
        raise ValueError(f"seq {seq_id}: {len(table)} blocks for {tokens} tokens")

    with pytest.raises(ValueError, match="seq 3: 1 blocks for 10 tokens"):
        inp.stage([SimpleNamespace(seq_id=3, token_id=1, position=9, block_table=[4])], check=check)


@pytest.mark.parametrize("padded", [None, 2, 3, 8, 64, 100])
def test_staged_ints_are_one_contiguous_block_at_every_padding(padded):
    # A strided view of the staging buffer makes torch copy it to the device through a
    # pageable temporary (a synchronous copy before every graph replay).
    bs = 4
    inp = DecodeInputs(bs, 16, pin=False)
    items = [SimpleNamespace(seq_id=s, token_id=10 + s, position=p, block_table=[7 * s + i for i in range(4)])
             for s, p in ((0, 5), (1, 0))]
    ints = inp.stage(items, padded=padded)
    Bp = padded or 2
    assert ints.shape == (4, Bp) and ints.is_contiguous()
    assert ints[0, :2].tolist() == [10, 11] and ints[1, :2].tolist() == [5, 0]
    assert ints[2, :2].tolist() == [1 * bs + 1, 7 * bs + 0]
    assert (ints[2, 2:] == -1).all() and (ints[:2, 2:] == 0).all()


@pytest.mark.parametrize("B", [1, 5, 16, 17, 40])
def test_few_and_many_sequences_stage_the_same_slots(B):
    # up to 16 sequences are staged from lists, more with numpy passes: both equal the lists
    bs, rnd = 4, random.Random(B)
    inp = DecodeInputs(bs, 32, pin=False)
    tables = [rnd.sample(range(1, 500), rnd.randint(1, 30)) for _ in range(B)]
    items = [SimpleNamespace(seq_id=100 + s, token_id=rnd.randrange(1000),
                             position=rnd.randrange(len(t) * bs), block_table=t) for s, t in enumerate(tables)]
    ints = inp.stage(items, padded=64)
    _, slots = _from_lists(tables, [it.position for it in items], bs, 32)
    assert ints[2, :B].tolist() == slots
    assert ints[0, :B].tolist() == [it.token_id for it in items]
    assert ints[1, :B].tolist() == [it.position for it in items]
    assert [inp.tables_rows.row(it.seq_id, it.block_table) for it in items] == ints[3, :B].tolist()
    assert (ints[2, B:] == -1).all()


def test_staging_views_stay_put_and_a_larger_batch_announces_a_new_buffer():
    # a captured graph copies from staging(Bp) itself: its address must not move under it
    inp = DecodeInputs(4, 16, pin=False)
    first = inp.staging(8)
    item = SimpleNamespace(seq_id=0, token_id=3, position=1, block_table=[2])
    assert inp.stage([item], padded=8).data_ptr() == first.data_ptr() and inp.generation == 0
    inp.stage([item], padded=200)   # beyond the CPU buffer's 64 rows
    assert inp.generation == 1 and inp.staging(8).data_ptr() != first.data_ptr()
    assert any(r.data_ptr() == first.data_ptr() for r in inp._retired)   # kept alive
