"""The block map as one RGBA image, built with numpy in the attach worker thread so
the GUI thread only uploads it (one ImageItem, one setImage per frame).

Layout: one band per (rank, medium), in that order, separated by a blank row; inside
a band the live blocks in slot order, `width` cells a row. Fill = the prefix tree
(root) in a colour-blind-safe categorical palette; brightness = age (new is bright)
or reuse (re-stored often is bright), whichever the user picked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyserve_core.attach.cache_views import BlockMap

# Okabe-Ito (without black) and Tol's teal: distinct for the common colour-vision
# deficiencies, and all readable on the dark canvas.
TREE_RGB = np.array([(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
                     (0, 114, 178), (213, 94, 0), (204, 121, 167), (68, 170, 153)], np.float32)
EMPTY_RGB = (34, 36, 44)        # a cell past the band's last block
GAP_RGB = (12, 12, 16)          # the row between two bands
SHADES = ("age", "reuse")
DIM = 0.3                        # the darkest shade: oldest / never reused


@dataclass(frozen=True)
class Band:
    rank: int
    medium: str
    blocks: int
    row0: int
    rows: int


@dataclass(frozen=True)
class BlockImage:
    rgba: np.ndarray          # uint8 [rows, width, 4]
    cell_slot: np.ndarray     # int32 [rows * width]: the slot in each cell, -1 for none
    width: int
    bands: tuple[Band, ...]
    shade: str
    shade_max: float          # what full dimness stands for: seconds of age, or re-stores

    def slot_at(self, row: int, col: int) -> int:
        if not (0 <= col < self.width and 0 <= row < self.rgba.shape[0]):
            return -1
        return int(self.cell_slot[row * self.width + col])

    def cell_of(self, slot: int) -> tuple[int, int] | None:
        hit = np.flatnonzero(self.cell_slot == slot)
        return None if hit.size == 0 else divmod(int(hit[0]), self.width)


def map_width(capacity: int, aspect: float = 1.6) -> int:
    """Cells per row: about `aspect` times wider than tall, in steps (8 cells for small
    maps, 32 for large) so the layout holds still while the cache grows."""
    ideal = np.sqrt(max(capacity, 1) * aspect)
    step = 8 if ideal < 256 else 32
    return max(8, int(np.ceil(ideal / step)) * step)


def shade_of(bm: BlockMap, shade: str) -> tuple[np.ndarray, float]:
    """Brightness in [DIM, 1] per block, and the value that maps to DIM."""
    if shade == "reuse":
        top = float(bm.reuse.max()) if len(bm) else 0.0
        x = np.log1p(bm.reuse.astype(np.float32)) / np.float32(np.log1p(max(top, 1.0)))
        return DIM + (1.0 - DIM) * x, top
    top = float(np.percentile(bm.age_s, 99)) if len(bm) else 0.0
    x = np.clip(bm.age_s / np.float32(max(top, 1e-3)), 0.0, 1.0)
    return 1.0 - (1.0 - DIM) * x, top


def paint(bm: BlockMap, shade: str = "age", width: int | None = None) -> BlockImage:
    if shade not in SHADES:
        raise ValueError(f"shade: expected one of {SHADES}, got {shade!r}")
    width = width or map_width(bm.capacity)
    nmed = len(bm.media)
    key = bm.rank.astype(np.int32) * nmed + bm.medium.astype(np.int32)
    order = np.argsort(key, kind="stable")           # slot order kept inside a band
    skey = key[order]
    cut = np.flatnonzero(np.diff(skey)) + 1
    starts = np.concatenate(([0], cut)) if skey.size else np.zeros(0, np.int64)
    counts = np.diff(np.concatenate((starts, [skey.size])))
    bands, row = [], 0
    offsets = np.zeros(len(starts), np.int64)
    for g, (st, n) in enumerate(zip(starts.tolist(), counts.tolist())):
        k = int(skey[st])
        rows = -(-n // width)
        bands.append(Band(k // nmed, bm.media[k % nmed], n, row, rows))
        offsets[g] = row * width - st
        row += rows + 1
    total_rows = max(row - 1, 1)
    cells = np.arange(skey.size, dtype=np.int64) + np.repeat(offsets, counts)
    rgba = np.empty((total_rows * width, 4), np.uint8)
    rgba[:, :3] = GAP_RGB
    rgba[:, 3] = 255
    for b in bands:                                  # unfilled cells of a band: empty
        rgba[b.row0 * width:(b.row0 + b.rows) * width, :3] = EMPTY_RGB
    bright, top = shade_of(bm, shade)
    rgb = TREE_RGB[(bm.root[order] % len(TREE_RGB)).astype(np.intp)] * bright[order, None]
    rgba[cells, :3] = rgb.astype(np.uint8)
    cell_slot = np.full(total_rows * width, -1, np.int32)
    cell_slot[cells] = bm.slot[order]
    return BlockImage(rgba.reshape(total_rows, width, 4), cell_slot, width, tuple(bands), shade, top)
