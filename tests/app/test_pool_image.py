"""The block-pool image and its visual language: one channel per meaning (owner fill,
fill height, refcount strip, event glyphs), no colour used for two things, events that
fade and never touch a fill (pure numpy, no display)."""

from __future__ import annotations

import numpy as np
import pytest

from app.serving import pool_image as pi
from app.widgets import palette as pal


def _pool(n=64):
    ref = np.zeros(n, np.int32)
    owner = np.full(n, -1, np.int64)
    fill = np.zeros(n, np.float32)
    ev = np.zeros(n, bool)
    return ref, owner, fill, ev


def _hue(rgb):
    import colorsys
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h, s


def test_palette_channels_never_share_a_colour():
    lut = pi.build_palette()
    assert lut.dtype == np.uint8 and lut.shape == (pi.NBASE, 3)
    owners = [tuple(lut[pi.OWNER0 + k]) for k in range(pal.NUM_OWNER_COLOURS)]
    greys = [tuple(lut[i]) for i in (pi.PAD, pi.FREE, pi.CACHED)]
    ramp = [tuple(lut[pi.REF0 + k]) for k in range(pal.REFCOUNT_MAX)]
    assert len(set(owners)) == pal.NUM_OWNER_COLOURS
    assert len(set(greys + ramp + owners)) == len(greys + ramp + owners)
    # free, cached-free, refcount ramp and events carry no hue: only owners are coloured
    for rgb in greys + ramp + [pal.EVENT_RGB]:
        assert _hue(rgb)[1] < 0.15
    for rgb in owners:
        assert _hue(rgb)[1] > 0.3
    # the ramp gets brighter with the refcount
    assert [r[0] for r in ramp] == sorted(r[0] for r in ramp) and ramp[0] != ramp[-1]


def test_base_index_is_the_owner_for_shared_blocks_too():
    ref, owner, fill, ev = _pool(8)
    ref[1], owner[1], fill[1] = 1, 5, 1.0
    ref[3], owner[3] = 3, 7
    ev[4] = True
    ref[5], owner[5], fill[5] = 1, 5 + pal.NUM_OWNER_COLOURS, 0.5
    idx = pi.base_index(ref, owner, fill, ev)
    assert idx[0] == pi.FREE and idx[4] == pi.CACHED
    assert idx[1] == pi.OWNER0 + 5 and idx[3] == pi.OWNER0 + 7
    assert idx[5] == idx[1]                      # hues repeat every 9 owners


def test_cell_image_fill_height_and_refcount_strip():
    ref, owner, fill, ev = _pool(3)
    ref[0], owner[0], fill[0] = 1, 2, 0.25       # a quarter full, refcount 1
    ref[1], owner[1], fill[1] = 9, 4, 1.0        # full, shared by 9 -> 8+
    ev[2] = True                                 # cached-free
    base = pi.base_index(ref, owner, fill, ev)
    img = pi.cell_image(base, ref, fill, 1, 8, 4)
    assert img.shape == (4, 32)
    c0, c1, c2 = img[:, 0:4], img[:, 4:8], img[:, 8:12]
    # block 0: only the bottom sub-row shows the owner, the rest the free grey
    assert (c0[3, :3] == pi.OWNER0 + 2).all() and (c0[:3, :3] == pi.FREE).all()
    assert (c0[:, 3] == pi.REF0).all()                          # refcount 1
    assert (c1[:, :3] == pi.OWNER0 + 4).all()
    assert (c1[:, 3] == pi.REF0 + pal.REFCOUNT_MAX - 1).all()   # 8+
    assert (c2 == pi.CACHED).all()                              # no strip without a refcount
    assert (img[:, 12:] == pi.PAD).all()                        # past the last block


def test_events_are_glyphs_that_fade_and_never_change_a_fill():
    n = 64
    a = pi.PoolAnimator(n)
    ref, owner, fill, ev = _pool(n)
    ref[[3, 4, 10]] = 1
    owner[[3, 4, 10]] = 2
    fill[[3, 4, 10]] = 1.0
    events = pi.PoolEvents(alloc=np.array([3, 4]), released=np.array([7, 8]),
                           preempted=np.array([8]), evict=np.array([9]), cow=np.array([[4, 10]]))
    img = a.apply(ref, owner, fill, ev, events, now=100.0).copy()
    base = pi.base_index(ref, owner, fill, ev)
    assert (a.decode(img) == base).all()                        # fills are the state, nothing else
    block, dst, kind, alpha = a.live_events(100.01)
    got = {(int(b), pi.EVENT_KINDS[k], int(d)) for b, k, d in zip(block, kind, dst)}
    assert got == {(3, "alloc", -1), (4, "alloc", -1), (7, "free", -1), (8, "preempt", -1),
                   (9, "evict", -1), (4, "cow", 10)}
    assert (alpha == 255).all()
    later = a.live_events(100.0 + 0.9 * pal.EVENT_DURATION_S["evict"])
    assert 0 < later[3][list(later[0]).index(9)] < 255          # fading
    a.live_events(110.0)
    assert not a.animating()                                    # all gone


def test_fade_alpha_steps_down_to_zero():
    a = pal.fade_alpha(np.array([0.0, 0.3, 0.6, 0.99, 1.0, 5.0]), 1.0)
    assert a[0] == 255 and a[-1] == 0 and a[-2] == 0
    assert list(a) == sorted(a, reverse=True)


def test_grid_fits_all_blocks():
    for n in (1, 100, 4096, 32768, 131072):
        r, c = pi.grid_shape(n)
        assert r * c >= n and (r - 1) * c < n


@pytest.mark.parametrize("n", [4096, 131072])
def test_image_shape_and_padding(n):
    a = pi.PoolAnimator(n)
    ref, owner, fill, ev = _pool(n)
    img = a.apply(ref, owner, fill, ev, pi.PoolEvents.empty(), 0.0)
    cell = pi.cell_size(n)
    assert img.shape == (a.rows * cell, a.cols * cell) and img.dtype == np.uint16
    flat = img[cell - 1::cell, 0::cell].reshape(-1)
    assert (flat[:n] == pi.FREE).all() and (flat[n:] == pi.PAD).all()


@pytest.mark.parametrize("tokens_per_seq, rows", [(1, 1), (3, 3), (4, 4)])
def test_pool_fill_is_tokens_over_block_size(tokens_per_seq, rows):
    """The snapshot's unit is always tokens; the views' fraction is tokens / block_size,
    drawn as that share of the cell's height."""
    from app.serving.snapshot import pool_arrays
    from tinyserve_core.kv.block_manager import BlockManager

    bm = BlockManager(num_blocks=8, block_size=4)
    for seq in range(3):
        bm.allocate(seq, list(range(10 * seq, 10 * seq + tokens_per_seq)))
    snap = bm.blocks_snapshot()
    pool = pool_arrays(snap)
    used = snap.ref_cnt > 0
    assert used.sum() == 3 and (snap.num_tokens[used] == tokens_per_seq).all()
    assert np.allclose(pool.fill[used], tokens_per_seq / 4) and (pool.fill[~used] == 0).all()
    base = pi.base_index(pool.ref_cnt, pool.owner, pool.fill, pool.evictable)
    img = pi.cell_image(base, pool.ref_cnt, pool.fill, 1, 8, 4)
    for b in np.flatnonzero(used):
        col = img[:, 4 * b]
        assert (col != pi.FREE).sum() == rows and col[3] != pi.FREE


@pytest.mark.parametrize("n", [300, 20000])   # 4 px cells, and 2 px cells past 8K blocks
def test_cell_by_cell_redraw_equals_a_full_rebuild_forward_and_back(n):
    """Each apply redraws only the cells whose channels changed (take_dirty names them),
    and the image is always the one a full rebuild of that state gives, whatever state
    came before (a scrub goes both ways)."""
    rng = np.random.default_rng(n)
    states = []
    ref, owner, fill, ev = _pool(n)
    for _ in range(6):
        ref, owner, fill, ev = ref.copy(), owner.copy(), fill.copy(), ev.copy()
        k = rng.choice(n, n // 50, replace=False)
        ref[k] = rng.integers(0, 10, k.size)
        owner[k] = rng.integers(-1, 30, k.size)
        fill[k] = rng.random(k.size).astype(np.float32)
        ev[k] = rng.random(k.size) < 0.3
        states.append((ref, owner, fill, ev))
    a = pi.PoolAnimator(n)
    a.apply(*states[0], pi.PoolEvents.empty(), 0.0)
    assert a.take_dirty() is pi.FULL
    prev = states[0]
    for i in [1, 2, 3, 5, 4, 1, 0, 5]:
        cur = states[i]
        a.apply(*cur, pi.PoolEvents.empty(), 0.0)
        full = pi.cell_image(pi.base_index(*cur), cur[0], cur[2], a.rows, a.cols, a.cell)
        np.testing.assert_array_equal(a.image, full)
        dirty = a.take_dirty()
        changed = np.flatnonzero((pi.base_index(*cur) != pi.base_index(*prev)) | (cur[0] != prev[0])
                                 | (cur[2] != prev[2]))
        assert set(changed.tolist()) >= set(dirty.tolist())   # never more than what changed
        assert dirty.size < n // 4                            # a partial redraw, not the whole
        prev = cur


def test_moved_rows_then_redrawn_cells_equal_a_fresh_grid():
    """A list of tables whose rows shift (a sequence ended, another started): the grid
    moves its rows and then redraws only the cells that differ from the moved ones, and
    shows exactly what a fresh grid of the new rows shows."""
    rng = np.random.default_rng(0)
    rows, cols, cell = 8, 16, 4
    table = {s: rng.integers(0, 40, rng.integers(1, cols)) for s in range(12)}
    ref = rng.integers(0, 4, 40)
    owner, fill, ev = rng.integers(0, 9, 40), rng.random(40).astype(np.float32), np.zeros(40, bool)

    def channels(seqs):
        ids = np.full((rows, cols), -1, np.int64)
        for i, s in enumerate(seqs):
            ids[i, : table[s].size] = table[s]
        flat = ids.reshape(-1)
        ok, safe = flat >= 0, np.maximum(flat, 0)
        base = np.where(ok, pi.base_index(ref[safe], owner[safe], fill[safe], ev[safe]), pi.PAD).astype(np.uint8)
        return base, np.where(ok, ref[safe], 0), np.where(ok, fill[safe], 0.0)

    old, new = [0, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5, 7, 8]        # seq 1 ended; 7 and 8 started
    g = pi.CellGrid(rows, cols, cell)
    g.update(*channels(old))
    g.take_dirty()
    at = {s: i for i, s in enumerate(old)}
    src = np.array([at.get(s, -1) for s in new] + [-1] * (rows - len(new)))
    g.move_rows(src)
    g.update(*channels(new))
    fresh = pi.CellGrid(rows, cols, cell)
    fresh.update(*channels(new))
    np.testing.assert_array_equal(g.image, fresh.image)
    redrawn = set(g.take_dirty().tolist())
    new_rows = {i for i, s in enumerate(new) if s not in at}
    assert redrawn == {r * cols + c for r in new_rows for c in range(table[new[r]].size)}
    # a copy of the pixels (a view's converted image) moves the same way
    px = np.arange(rows * cell * cols * cell).reshape(rows * cell, cols * cell)
    moved = g.moved_pixels(px, src, -1)
    assert (moved[: cell] == px[: cell]).all() and (moved[cell: 2 * cell] == px[2 * cell: 3 * cell]).all()
    assert (moved[len(new) * cell:] == -1).all()
    with pytest.raises(ValueError):
        g.move_rows(src[:-1])
