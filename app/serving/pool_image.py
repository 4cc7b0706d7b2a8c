"""The block pool as one indexed image plus the events to draw over it, all vectorised
numpy so that 131,072 blocks cost a few ms (the channels are in widgets/palette.py).

Every block is a CELL x CELL square of image pixels, each pixel a palette (lookup
table) index: the left CELL-1 columns are the owner's colour, filled from the bottom
in proportion to the tokens the block holds (the rest shows the free grey); the right
column is the refcount strip (a grey ramp, 1 to 8+). Free and cached-free blocks are
their grey all over. Events never change a fill: `PoolAnimator` keeps them with their
start time and hands the view the ones still fading, as glyphs and CoW arrows.
Qt-free on purpose: the numbers are tested without a display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..widgets import palette as pal

# palette indices
PAD, FREE, CACHED = 0, 1, 2
OWNER0 = 3
REF0 = OWNER0 + pal.NUM_OWNER_COLOURS      # refcount 1 .. REFCOUNT_MAX
NBASE = REF0 + pal.REFCOUNT_MAX

EVENT_KINDS = ("alloc", "free", "evict", "preempt", "cow")
_KIND = {k: i for i, k in enumerate(EVENT_KINDS)}
_DUR = np.array([pal.EVENT_DURATION_S[k] for k in EVENT_KINDS], np.float64)
MAX_EVENTS = 4096                           # newest kept: a bounded draw per frame
MAX_GLYPHS = 256                            # newest drawn: more is noise, and costs paint time
MAX_ARROWS = 16
FULL = "full"                               # take_dirty: the whole image changed


def build_palette() -> np.ndarray:
    """uint8 [NBASE, 3]: every colour a pool cell can show."""
    lut = np.zeros((NBASE, 3), np.uint8)
    lut[PAD], lut[FREE], lut[CACHED] = pal.PAD_RGB, pal.FREE_RGB, pal.CACHED_RGB
    lut[OWNER0:REF0] = pal.OWNER_RGB
    lut[REF0:NBASE] = pal.REFCOUNT_RGB
    return lut


def cell_size(num_blocks: int) -> int:
    """Image pixels per block side: 4 (fill in quarters) up to 8K blocks, then 2 (fill
    in halves): a bigger pool's cells are a few screen pixels until zoomed in, and the
    image of 131K blocks stays half a megapixel."""
    return 4 if num_blocks <= 8192 else 2


def grid_shape(num_blocks: int, aspect: float = 2.5) -> tuple[int, int]:
    """(rows, cols) with cols ~ aspect * rows, cols a multiple of 8 for tidy ids."""
    cols = max(8, int(math.ceil(math.sqrt(num_blocks * aspect) / 8.0)) * 8)
    rows = max(1, -(-num_blocks // cols))
    return rows, cols


def base_index(ref_cnt: np.ndarray, owner: np.ndarray, fill: np.ndarray,
               evictable: np.ndarray) -> np.ndarray:
    """Fill colour index per block (uint8 [N]): the owner's colour for a block in use
    (shared ones too: the refcount strip says how shared), else free or cached-free.
    `fill` is not used here; it shapes the cell (`cell_image`)."""
    n = ref_cnt.shape[0]
    idx = np.full(n, FREE, np.uint8)
    idx[evictable & (ref_cnt <= 0)] = CACHED
    used = ref_cnt > 0
    idx[used] = (OWNER0 + np.mod(owner[used], pal.NUM_OWNER_COLOURS)).astype(np.uint8)
    return idx


def refcount_index(ref_cnt: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The strip's palette index: the ramp step for refcount >= 1, else the fill's grey."""
    ref = np.asarray(ref_cnt)
    strip = (REF0 + np.clip(ref, 1, pal.REFCOUNT_MAX) - 1).astype(np.uint8)
    return np.where(ref > 0, strip, base).astype(np.uint8)


def cell_channels(base: np.ndarray, ref_cnt: np.ndarray, fill: np.ndarray,
                  cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a block's cell shows, per block: (fill index, strip index, owner sub-rows).
    Two blocks with equal channels draw the same pixels, so comparing channels finds the
    cells to redraw."""
    strip = refcount_index(ref_cnt, base)
    # sub-rows of the cell that show the owner: ceil(fill * cell) from the bottom, at
    # least one for any block in use (an empty new block is still owned)
    used = np.asarray(ref_cnt) > 0
    levels = np.where(used, np.clip(np.ceil(np.asarray(fill) * cell), 1, cell), cell).astype(np.uint8)
    return np.asarray(base, np.uint8), strip, levels


def cell_pixels(base: np.ndarray, strip: np.ndarray, levels: np.ndarray, cell: int) -> np.ndarray:
    """uint16 [k, cell, cell]: the pixels of k cells from their channels (row 0 at the top)."""
    k = base.shape[0]
    out = np.empty((k, cell, cell), np.uint16)
    empty = np.where(base == PAD, PAD, FREE).astype(np.uint16)
    sub = np.arange(cell)[None, :]
    # sub-row r is coloured when it is among the bottom `level`
    coloured = levels[:, None].astype(np.int64) > cell - 1 - sub
    out[:, :, : cell - 1] = np.where(coloured, base[:, None], empty[:, None])[:, :, None]
    out[:, :, cell - 1] = strip[:, None]
    return out


def cell_image(base: np.ndarray, ref_cnt: np.ndarray, fill: np.ndarray, rows: int,
               cols: int, cell: int) -> np.ndarray:
    """uint16 [rows*cell, cols*cell] palette indices, block 0 at the top left, row 0 of a
    cell at its top (the view draws rows top-down). uint16, not uint8: pyqtgraph turns
    uint8 + a lookup table into an Indexed8 QImage that Qt converts on every paint."""
    total = rows * cols
    b, strip, levels = _padded(cell_channels(base, ref_cnt, fill, cell), total, cell)
    return _assemble(cell_pixels(b, strip, levels, cell), rows, cols, cell)


def _assemble(px: np.ndarray, rows: int, cols: int, cell: int) -> np.ndarray:
    """[rows*cols, cell, cell] cell pixels -> the [rows*cell, cols*cell] image."""
    return px.reshape(rows, cols, cell, cell).transpose(0, 2, 1, 3).reshape(rows * cell, cols * cell)


def _padded(channels, total: int, cell: int):
    """Channels of `total` cells: the blocks', then PAD cells filling the last row."""
    out = (np.full(total, PAD, np.uint8), np.full(total, PAD, np.uint8), np.full(total, cell, np.uint8))
    for o, c in zip(out, channels):
        o[: c.shape[0]] = c
    return out


def cell_pixel_index(ids: np.ndarray, cols: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) image coordinates [k, cell, cell] of the pixels of cells `ids`."""
    r, c = np.divmod(np.asarray(ids, np.int64), cols)
    sub = np.arange(cell)
    return ((r * cell)[:, None, None] + sub[None, :, None],
            (c * cell)[:, None, None] + sub[None, None, :])


class CellGrid:
    """A rows x cols grid of cells and its index image, redrawn cell by cell: `update`
    compares the new channels with the drawn ones and repaints only the cells that
    differ (a step changes a few hundred of 32K blocks); `take_dirty` tells the view
    which pixels to convert."""

    def __init__(self, rows: int, cols: int, cell: int):
        self.rows, self.cols, self.cell = rows, cols, cell
        self.image = np.full((rows * cell, cols * cell), PAD, np.uint16)
        total = rows * cols
        self._chans = (np.full(total, PAD, np.uint8), np.full(total, PAD, np.uint8),
                       np.full(total, cell, np.uint8))
        self._dirty = None            # None: never drawn; FULL or a list of id arrays

    def update(self, base: np.ndarray, ref_cnt: np.ndarray, fill: np.ndarray) -> None:
        """New state of cells 0..n-1 (the rest are PAD)."""
        self.update_channels(_padded(cell_channels(base, ref_cnt, fill, self.cell), self.rows * self.cols,
                                     self.cell))

    def update_channels(self, chans: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """New channels (fill index, strip index, owner sub-rows) of every cell."""
        changed = np.flatnonzero((chans[0] != self._chans[0]) | (chans[1] != self._chans[1])
                                 | (chans[2] != self._chans[2]))
        self._chans = chans
        if self._dirty is None or changed.size * 4 > chans[0].shape[0]:
            self.image = _assemble(cell_pixels(*chans, self.cell), self.rows, self.cols, self.cell)
            self._dirty = FULL
        elif changed.size:
            self._redraw(changed, tuple(c[changed] for c in chans))

    def update_cells(self, ids: np.ndarray, chans: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """New channels of cells `ids` only (unique; every other cell as it was): the
        cells of the blocks a time-travel step changed, not all of them."""
        if self._dirty is None:
            raise RuntimeError("update_cells before a whole update")
        old = self._chans
        differ = (chans[0] != old[0][ids]) | (chans[1] != old[1][ids]) | (chans[2] != old[2][ids])
        if differ.any():
            ids, chans = ids[differ], tuple(c[differ] for c in chans)
            for o, c in zip(old, chans):
                o[ids] = c
            self._redraw(ids, chans)

    def _redraw(self, ids: np.ndarray, chans) -> None:
        rr, cc = cell_pixel_index(ids, self.cols, self.cell)
        self.image[rr, cc] = cell_pixels(*chans, self.cell)
        if self._dirty is not FULL:
            self._dirty.append(ids)

    def move_rows(self, src: np.ndarray) -> None:
        """Row i now shows what row src[i] showed (-1: blank): a list of block tables
        whose rows shift when a sequence ends or starts, moved as rows instead of
        redrawn cell by cell (`update` then redraws only what else changed). A view
        keeping converted pixels moves them the same way (`moved_pixels`)."""
        src = np.asarray(src, np.int64)
        if src.shape != (self.rows,):
            raise ValueError(f"move_rows: {src.shape[0]} rows for a grid of {self.rows}")
        blank = (PAD, PAD, self.cell)      # a blank cell's channels: PAD pixels all over
        self._chans = tuple(self.moved_pixels(c.reshape(self.rows, self.cols), src, b).reshape(-1)
                            for c, b in zip(self._chans, blank))
        self.image = self.moved_pixels(self.image, src, PAD)

    def moved_pixels(self, pixels: np.ndarray, src: np.ndarray, blank) -> np.ndarray:
        """A copy of `pixels` (rows * k rows: this grid's image, or its channels with
        k = 1) with its cell rows moved as `move_rows(src)` moves them; blank rows
        filled with `blank`."""
        src = np.asarray(src)
        out = pixels.reshape(self.rows, -1)[np.maximum(src, 0)]     # one gather of whole rows
        out[src < 0] = blank
        return out.reshape(pixels.shape)

    def drawn(self) -> bool:
        return self._dirty is not None

    def take_dirty(self):
        """The cells redrawn since the last take: FULL (the whole image) or an array of
        cell ids (maybe empty)."""
        d = self._dirty
        self._dirty = []
        if d is None or d is FULL:
            return FULL
        if len(d) == 1:       # one update's cells: unique already
            return d[0]
        return np.unique(np.concatenate(d)) if d else np.zeros(0, np.int64)


def _with_pad(c: np.ndarray, pad: int) -> np.ndarray:
    """uint8 `c` with `pad` after its last entry, in one allocation (a live pool recomputes
    every block's channels each frame)."""
    out = np.empty(c.shape[0] + 1, np.uint8)
    out[:-1] = c
    out[-1] = pad
    return out


class BlockChannels:
    """Every block's cell channels at one cell size (`cell_channels`), with a PAD cell
    after the last block (index -1: what a grid's empty cells gather). Kept from one
    time-travel answer to the next by recomputing only the blocks the answer names as
    changed (`Snapshot.changes`); any other state is computed whole."""

    def __init__(self, cell: int):
        self.cell = cell
        self.chans: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.serial: int | None = None     # the answer these channels show (None: live)

    def update(self, ref_cnt, owner, fill, evictable, changes=None) -> tuple[np.ndarray, ...]:
        """The channels of this state; `changes` = (serial of the state before or None,
        serial of this one, ids of the blocks that may differ) or None (a live state).
        Returns arrays of num_blocks + 1 entries, changed in place by the next update."""
        n = ref_cnt.shape[0]
        if self.follows(changes) and self.chans[0].shape[0] == n + 1:
            ids = changes[2]
            if ids.size:
                ref = ref_cnt[ids]
                new = cell_channels(base_index(ref, owner[ids], None, evictable[ids]), ref, fill[ids], self.cell)
                for o, c in zip(self.chans, new):
                    o[ids] = c
        else:
            new = cell_channels(base_index(ref_cnt, owner, fill, evictable), ref_cnt, fill, self.cell)
            self.chans = tuple(_with_pad(c, pad) for c, pad in zip(new, (PAD, PAD, self.cell)))
        self.serial = None if changes is None else changes[1]
        return self.chans

    def at(self, ids, ref_cnt, owner, fill, evictable, changes=None) -> tuple[np.ndarray, ...]:
        """The channels of blocks `ids` (-1: the PAD cell), for a view that shows only some
        blocks (the block tables). A live state computes just those blocks: a pass over the
        whole pool every frame would cost 1.5 ms at 32K blocks for ~12K table entries; a
        time-travel answer keeps every block's channels (`update`) and gathers."""
        if changes is None:
            self.chans, self.serial = None, None   # the next time-travel answer starts whole
            ok = ids >= 0
            safe = np.where(ok, ids, 0)
            ref = ref_cnt[safe]
            new = cell_channels(base_index(ref, owner[safe], fill[safe], evictable[safe]), ref, fill[safe], self.cell)
            return tuple(np.where(ok, c, pad).astype(np.uint8) for c, pad in zip(new, (PAD, PAD, self.cell)))
        return tuple(c[ids] for c in self.update(ref_cnt, owner, fill, evictable, changes))

    def follows(self, changes) -> bool:
        """Whether `changes` lead from the state these channels show."""
        return (changes is not None and changes[0] is not None and self.chans is not None
                and changes[0] == self.serial)


@dataclass
class PoolEvents:
    """Block ids touched by events since the last frame (copied by the worker)."""
    alloc: np.ndarray
    released: np.ndarray
    preempted: np.ndarray          # released because their sequence was preempted
    evict: np.ndarray
    cow: np.ndarray                # [k, 2] (src, dst)

    @classmethod
    def empty(cls) -> "PoolEvents":
        e = np.zeros(0, np.int64)
        return cls(e, e, e, e, np.zeros((0, 2), np.int64))


class PoolAnimator:
    """The grid of one pool size, its newest cell image, and the events still fading."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.rows, self.cols = grid_shape(num_blocks)
        self.cell = cell_size(num_blocks)
        self.grid = CellGrid(self.rows, self.cols, self.cell)
        self.channels = BlockChannels(self.cell)
        # events: block (src for CoW), CoW destination (-1 otherwise), kind code, start
        self.ev_block = np.zeros(0, np.int64)
        self.ev_dst = np.zeros(0, np.int64)
        self.ev_kind = np.zeros(0, np.int8)
        self.ev_t0 = np.zeros(0, np.float64)

    @property
    def image(self) -> np.ndarray:
        return self.grid.image

    def cell_of(self, block_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c = np.divmod(np.asarray(block_ids, np.int64), self.cols)
        return r, c

    def apply(self, ref_cnt: np.ndarray, owner: np.ndarray, fill: np.ndarray,
              evictable: np.ndarray, events: PoolEvents, now: float, changes=None) -> np.ndarray:
        """New state and the events that led to it; returns the new cell image. Only the
        cells whose channels changed are redrawn (`take_dirty` says which): a step
        changes a few hundred of 32K blocks. With `changes` (a time-travel answer after
        the one drawn, see BlockChannels) only the blocks it names are looked at."""
        incremental = self.channels.follows(changes) and self.grid.drawn()
        chans = self.channels.update(ref_cnt, owner, fill, evictable, changes)
        n = self.num_blocks
        if incremental:
            ids = np.asarray(changes[2], np.int64)
            self.grid.update_cells(ids, tuple(c[ids] for c in chans))
        else:
            self.grid.update_channels(_padded(tuple(c[:n] for c in chans), self.rows * self.cols, self.cell))
        self._add_events(events, now)
        return self.image

    def take_dirty(self):
        return self.grid.take_dirty()

    def _add_events(self, events: PoolEvents, now: float) -> None:
        preempted = np.asarray(events.preempted, np.int64)
        freed = np.setdiff1d(np.asarray(events.released, np.int64), preempted)
        groups = [(events.alloc, "alloc"), (freed, "free"), (preempted, "preempt"),
                  (events.evict, "evict")]
        blocks = [np.asarray(ids, np.int64).reshape(-1) for ids, _ in groups]
        kinds = [np.full(b.size, _KIND[k], np.int8) for b, (_, k) in zip(blocks, groups)]
        cow = np.asarray(events.cow, np.int64).reshape(-1, 2)
        dst = [np.full(b.size, -1, np.int64) for b in blocks] + [cow[:, 1]]
        blocks.append(cow[:, 0])
        kinds.append(np.full(cow.shape[0], _KIND["cow"], np.int8))
        new_b = np.concatenate(blocks)
        ok = (new_b >= 0) & (new_b < self.num_blocks)
        self.ev_block = np.concatenate([self.ev_block, new_b[ok]])[-MAX_EVENTS:]
        self.ev_dst = np.concatenate([self.ev_dst, np.concatenate(dst)[ok]])[-MAX_EVENTS:]
        self.ev_kind = np.concatenate([self.ev_kind, np.concatenate(kinds)[ok]])[-MAX_EVENTS:]
        self.ev_t0 = np.concatenate([self.ev_t0, np.full(int(ok.sum()), now)])[-MAX_EVENTS:]

    def live_events(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(block, dst, kind name index, alpha 0..255) of the events still visible at
        `now`; drops the finished ones."""
        age = now - self.ev_t0
        keep = age < _DUR[self.ev_kind]
        if not keep.all():
            self.ev_block, self.ev_dst = self.ev_block[keep], self.ev_dst[keep]
            self.ev_kind, self.ev_t0 = self.ev_kind[keep], self.ev_t0[keep]
            age = age[keep]
        alpha = np.zeros(age.size, np.int64)
        for k, name in enumerate(EVENT_KINDS):
            m = self.ev_kind == k
            if m.any():
                alpha[m] = pal.fade_alpha(age[m], pal.EVENT_DURATION_S[name])
        return self.ev_block, self.ev_dst, self.ev_kind, alpha

    def animating(self) -> bool:
        return self.ev_block.size > 0

    def decode(self, image: np.ndarray) -> np.ndarray:
        """The fill colour index of every block as drawn (its top-left pixel when the
        cell is full, else the bottom-left one), for tests and legends."""
        c = self.cell
        bottom = image[c - 1::c, 0::c].reshape(-1)[: self.num_blocks]
        return bottom
