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


LEVELS = 32                      # brightness steps: the palette holds every colour drawn


def _rgba32(rgb) -> np.uint32:
    return np.array([[*rgb, 255]], np.uint8).view(np.uint32)[0, 0]


def _palette() -> np.ndarray:
    """uint32 RGBA [len(TREE_RGB) * LEVELS]: tree colour x brightness level."""
    lv = DIM + (1.0 - DIM) * np.arange(LEVELS, dtype=np.float32) / (LEVELS - 1)
    rgb = (TREE_RGB[:, None, :] * lv[None, :, None]).reshape(-1, 3).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, np.uint8)], axis=1)
    return np.ascontiguousarray(rgba).view(np.uint32)[:, 0]


PALETTE = _palette()


def shade_of(bm: BlockMap, shade: str) -> tuple[np.ndarray, float]:
    """Brightness level (0 = DIM .. LEVELS-1 = full) per block, and the value that maps
    to DIM (99th percentile of age, of a sample when large: outliers do not flatten it)."""
    n = len(bm)
    if shade == "reuse":
        top = float(bm.reuse.max()) if n else 0.0
        x = np.log1p(bm.reuse.astype(np.float32)) / np.float32(np.log1p(max(top, 1.0)))
    else:
        sample = bm.age_s[::max(1, n // 20_000)]
        top = float(np.percentile(sample, 99)) if n else 0.0
        x = 1.0 - np.minimum(bm.age_s / np.float32(max(top, 1e-3)), 1.0)
    return (np.clip(x, 0.0, 1.0) * (LEVELS - 1) + 0.5).astype(np.intp), top


def paint(bm: BlockMap, shade: str = "age", width: int | None = None) -> BlockImage:
    """A band is a contiguous run of cells, written with two slice copies (colours,
    slots) of the blocks its mask picks (slot order kept): no sort, no per-cell scatter."""
    if shade not in SHADES:
        raise ValueError(f"shade: expected one of {SHADES}, got {shade!r}")
    width = width or map_width(bm.capacity)
    nmed = len(bm.media)
    key = bm.rank.astype(np.int16) * np.int16(nmed) + bm.medium.astype(np.int16)
    level, top = shade_of(bm, shade)
    colour = PALETTE[(bm.root % len(TREE_RGB)).astype(np.intp) * LEVELS + level]
    present = np.flatnonzero(np.bincount(key)) if key.size else np.zeros(0, np.intp)
    bands, masks, row = [], [], 0
    for k in present.tolist():          # a band per (rank, medium); a mask per band, no sort
        m = key == k if present.size > 1 else slice(None)
        n = int(key.size if present.size == 1 else np.count_nonzero(m))
        rows = -(-n // width)
        bands.append(Band(k // nmed, bm.media[k % nmed], n, row, rows))
        masks.append(m)
        row += rows + 1
    total = max(row - 1, 1) * width
    img = np.full(total, _rgba32(GAP_RGB), np.uint32)
    cell_slot = np.full(total, -1, np.int32)
    empty = _rgba32(EMPTY_RGB)
    for band, m in zip(bands, masks):
        a = band.row0 * width
        img[a:a + band.rows * width] = empty
        img[a:a + band.blocks] = colour[m]
        cell_slot[a:a + band.blocks] = bm.slot[m]
    rgba = img.view(np.uint8).reshape(-1, width, 4)
    return BlockImage(rgba, cell_slot, width, tuple(bands), shade, top)
