"""The block-pool image: palette states stay distinct, and events become the right
animation in the right cells for the right time (pure numpy, no display)."""

from __future__ import annotations

import numpy as np
import pytest

from app.serving import pool_image as pi


def _pool(n=64):
    ref = np.zeros(n, np.int32)
    owner = np.full(n, -1, np.int64)
    fill = np.zeros(n, np.float32)
    ev = np.zeros(n, bool)
    return ref, owner, fill, ev


def test_palette_states_are_distinct_colours():
    lut = pi.build_palette()
    assert lut.dtype == np.uint8 and lut.shape == (pi.NUM_VARIANTS * pi.NBASE, 3)
    steady = {tuple(lut[i]) for i in (pi.FREE, pi.CACHED, pi.SHARED0, pi.SHARED0 + 3)}
    owners = {tuple(lut[pi.OWNER0 + h * pi.NUM_SHADES + 3]) for h in range(pi.NUM_HUES)}
    assert len(steady) == 4
    assert len(owners) == pi.NUM_HUES                    # every hue its own colour
    assert not (steady & owners)
    # shade = fill: a fuller block is brighter
    shades = [lut[pi.OWNER0 + s].astype(int).sum() for s in range(pi.NUM_SHADES)]
    assert shades == sorted(shades) and shades[0] < shades[-1]


def test_base_index_states():
    ref, owner, fill, ev = _pool(8)
    ref[1], owner[1], fill[1] = 1, 5, 1.0        # owned, full
    ref[2], owner[2], fill[2] = 1, 5, 0.2        # owned, a quarter
    ref[3], owner[3] = 3, 7                      # shared by 3
    ev[4] = True                                 # cached-free
    ref[5], owner[5], fill[5] = 1, 6, 1.0        # another request
    idx = pi.base_index(ref, owner, fill, ev)
    assert idx[0] == pi.FREE and idx[4] == pi.CACHED
    assert idx[3] == pi.SHARED0 + 1
    assert idx[1] == pi.OWNER0 + 5 * pi.NUM_SHADES + 3
    assert idx[2] == pi.OWNER0 + 5 * pi.NUM_SHADES + 0
    assert idx[1] != idx[5]                      # colour follows the owner


def test_grid_fits_all_blocks():
    for n in (1, 100, 4096, 32768, 131072):
        r, c = pi.grid_shape(n)
        assert r * c >= n and (r - 1) * c < n


def test_events_animate_then_settle():
    n = 64
    a = pi.PoolAnimator(n)
    ref, owner, fill, ev = _pool(n)
    ref[[3, 4, 9]] = 1
    owner[[3, 4, 9]] = 2
    fill[[3, 4, 9]] = 1.0
    ref[10], owner[10], fill[10] = 1, 2, 0.5
    base = pi.base_index(ref, owner, fill, ev)
    events = pi.PoolEvents(alloc=np.array([3, 4]), released=np.zeros(0, np.int64),
                           preempted=np.zeros(0, np.int64), evict=np.array([9]),
                           cow=np.array([[4, 10]]))
    a.apply(base, events, now=100.0)
    variant, b = a.decode(a.frame(now=100.01).reshape(-1)[:n])
    names = {i: pi.variant_name(int(variant[i])) for i in (3, 4, 9, 10, 0)}
    assert names[3] == "fade"             # allocation fades in
    assert names[4] == "cow" and names[10] == "cow"   # CoW flashes src and dst
    assert names[9] == "evict"
    assert names[0] == "steady"
    assert (b[:n] == base).all()           # the flash is over the block's own colour
    # fade-in brightens toward the block's colour
    lut = pi.build_palette()
    early = lut[a.frame(now=100.01).reshape(-1)[3]].astype(int).sum()
    late = lut[a.frame(now=100.0 + 0.9 * pi.DURATION_S[pi.ANIM_FADE_IN]).reshape(-1)[3]].astype(int).sum()
    assert early < late
    img = a.frame(now=110.0).reshape(-1)[:n]
    assert (img == base).all()             # everything settled
    assert not (a.kind > 0).any()


def test_free_fades_out_from_old_colour_and_preempt_flashes():
    n = 16
    a = pi.PoolAnimator(n)
    ref, owner, fill, ev = _pool(n)
    ref[[1, 2]] = 1
    owner[[1, 2]] = 4
    fill[[1, 2]] = 1.0
    owned = pi.base_index(ref, owner, fill, ev)
    a.apply(owned, pi.PoolEvents.empty(), now=0.0)
    freed = pi.base_index(*_pool(n))
    a.apply(freed, pi.PoolEvents(np.zeros(0, np.int64), np.array([1, 2]), np.array([2]),
                                 np.zeros(0, np.int64), np.zeros((0, 2), np.int64)), now=1.0)
    variant, b = a.decode(a.frame(now=1.01).reshape(-1)[:n])
    assert pi.variant_name(int(variant[1])) == "fade" and b[1] == owned[1]
    assert pi.variant_name(int(variant[2])) == "preempt"


@pytest.mark.parametrize("n", [4096, 131072])
def test_frame_is_vectorised_shape(n):
    a = pi.PoolAnimator(n)
    img = a.frame(0.0)
    assert img.shape == pi.grid_shape(n) and img.dtype == np.uint16
    assert (img.reshape(-1)[n:] == pi.PAD).all()


@pytest.mark.parametrize("tokens_per_seq, fill", [(1, 0.25), (3, 0.75), (4, 1.0)])
def test_pool_fill_is_tokens_over_block_size(tokens_per_seq, fill):
    """The snapshot's unit is always tokens; the views' fraction is tokens / block_size.
    One token per block used to be drawn full (the unit was guessed from the maximum)."""
    from app.serving.snapshot import pool_arrays
    from tinyserve_core.kv.block_manager import BlockManager

    bm = BlockManager(num_blocks=8, block_size=4)
    for seq in range(3):
        bm.allocate(seq, list(range(10 * seq, 10 * seq + tokens_per_seq)))
    snap = bm.blocks_snapshot()
    pool = pool_arrays(snap)
    used = snap.ref_cnt > 0
    assert used.sum() == 3 and (snap.num_tokens[used] == tokens_per_seq).all()
    assert np.allclose(pool.fill[used], fill) and (pool.fill[~used] == 0).all()
    shade = (pi.base_index(pool.ref_cnt, pool.owner, pool.fill, pool.evictable)[used]
             - pi.OWNER0) % pi.NUM_SHADES
    assert (shade == round(fill * pi.NUM_SHADES) - 1).all()
