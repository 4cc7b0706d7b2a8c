"""The block pool as one indexed image: a palette (lookup table) and the per-frame
index computation, all vectorised numpy so that 131,072 blocks cost a few ms.

Each cell's LUT index = variant * NBASE + base, where `base` is the block's steady
state (free, cached-free, owner colour x fill shade, shared x refcount) and `variant`
is an animation stage (a fade toward the free colour, or a flash toward a highlight
colour). The palette therefore holds every colour the view can show and the image
stays a small uint16 array that pyqtgraph maps through the LUT in one `take`.
Qt-free on purpose: the numbers are tested without a display.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

# steady states
PAD, FREE, CACHED = 0, 1, 2
NUM_HUES = 24
NUM_SHADES = 4
OWNER0 = 3
SHARED0 = OWNER0 + NUM_HUES * NUM_SHADES
NUM_SHARED = 4                       # refcount 2, 3, 4, 5+
NBASE = SHARED0 + NUM_SHARED

FREE_RGB = (34, 36, 44)
PAD_RGB = (12, 12, 16)
CACHED_RGB = (62, 92, 118)           # evictable: keeps its hash, reusable by a prefix hit
SHARED_RGB = ((226, 198, 64), (240, 214, 96), (250, 230, 140), (255, 246, 200))

# animations: (name, target colour, number of stages)
FADE_STAGES = 4
FLASH_STAGES = 4
FLASHES = {"cow": (110, 255, 255), "evict": (255, 64, 64), "preempt": (255, 150, 20)}
ANIM_NONE, ANIM_FADE_IN, ANIM_FADE_OUT, ANIM_COW, ANIM_EVICT, ANIM_PREEMPT = range(6)
ANIM_NAMES = {ANIM_FADE_IN: "alloc", ANIM_FADE_OUT: "free", ANIM_COW: "cow",
              ANIM_EVICT: "evict", ANIM_PREEMPT: "preempt"}
DURATION_S = {ANIM_FADE_IN: 0.45, ANIM_FADE_OUT: 0.6, ANIM_COW: 0.9, ANIM_EVICT: 0.7,
              ANIM_PREEMPT: 0.8}
_FADE_V0 = 1                          # variants 1..4: fade toward free, strongest first
_FLASH_V0 = _FADE_V0 + FADE_STAGES    # then 4 stages per flash colour
NUM_VARIANTS = _FLASH_V0 + FLASH_STAGES * len(FLASHES)
_FLASH_INDEX = {ANIM_COW: 0, ANIM_EVICT: 1, ANIM_PREEMPT: 2}


def owner_rgb(hue_index: int, shade: int) -> tuple[int, int, int]:
    # golden-ratio hue steps: consecutive sequence ids get far-apart hues
    h = (hue_index * 0.6180339887) % 1.0
    v = 0.42 + 0.58 * (shade + 1) / NUM_SHADES
    r, g, b = colorsys.hsv_to_rgb(h, 0.72, v)
    return int(r * 255), int(g * 255), int(b * 255)


def build_palette() -> np.ndarray:
    """uint8 [NUM_VARIANTS * NBASE, 3]: every colour the pool view can show."""
    base = np.zeros((NBASE, 3), np.float32)
    base[PAD], base[FREE], base[CACHED] = PAD_RGB, FREE_RGB, CACHED_RGB
    for h in range(NUM_HUES):
        for s in range(NUM_SHADES):
            base[OWNER0 + h * NUM_SHADES + s] = owner_rgb(h, s)
    base[SHARED0:SHARED0 + NUM_SHARED] = SHARED_RGB
    out = [base]
    free = np.asarray(FREE_RGB, np.float32)
    for k in range(FADE_STAGES):          # k=0: mostly free ... k=3: mostly the colour
        a = (k + 1) / (FADE_STAGES + 1)
        out.append(free + (base - free) * a)
    for target in FLASHES.values():
        t = np.asarray(target, np.float32)
        for k in range(FLASH_STAGES):     # k=0: full flash ... k=3: faint
            a = 1.0 - k / FLASH_STAGES
            out.append(base + (t - base) * a)
    lut = np.concatenate(out).round().clip(0, 255).astype(np.uint8)
    lut[PAD::NBASE] = PAD_RGB             # padding never animates
    return lut


def grid_shape(num_blocks: int, aspect: float = 2.0) -> tuple[int, int]:
    """(rows, cols) with cols ~ aspect * rows, cols a multiple of 8 for tidy ids."""
    cols = max(8, int(math.ceil(math.sqrt(num_blocks * aspect) / 8.0)) * 8)
    rows = max(1, -(-num_blocks // cols))
    return rows, cols


def base_index(ref_cnt: np.ndarray, owner: np.ndarray, fill: np.ndarray,
               evictable: np.ndarray) -> np.ndarray:
    """Steady-state palette index per block (uint16 [N]).

    fill is the fraction of the block's slots holding tokens (0..1); owner is the
    sequence id of the (first) owner, -1 for none."""
    n = ref_cnt.shape[0]
    idx = np.full(n, FREE, np.uint16)
    idx[evictable & (ref_cnt <= 0)] = CACHED
    used = ref_cnt == 1
    shade = np.clip(np.ceil(fill * NUM_SHADES) - 1, 0, NUM_SHADES - 1).astype(np.int64)
    hue = np.mod(owner, NUM_HUES)
    idx[used] = (OWNER0 + hue[used] * NUM_SHADES + shade[used]).astype(np.uint16)
    shared = ref_cnt > 1
    idx[shared] = (SHARED0 + np.minimum(ref_cnt[shared], 5) - 2).astype(np.uint16)
    return idx


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
    """Per-block animation state; `frame()` returns the LUT index image for `now`."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.rows, self.cols = grid_shape(num_blocks)
        self.kind = np.zeros(num_blocks, np.int8)
        self.t0 = np.zeros(num_blocks, np.float64)
        self.from_base = np.full(num_blocks, FREE, np.uint16)
        self.prev_base = np.full(num_blocks, FREE, np.uint16)
        self.base = np.full(num_blocks, FREE, np.uint16)
        self._dur = np.zeros(6, np.float64)
        for k, d in DURATION_S.items():
            self._dur[k] = d
        self._image = np.full(self.rows * self.cols, PAD, np.uint16)

    def cell_of(self, block_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c = np.divmod(np.asarray(block_ids, np.int64), self.cols)
        return r, c

    def apply(self, base: np.ndarray, events: PoolEvents, now: float) -> None:
        """New steady state plus the events that led to it."""
        self.prev_base, self.base = self.base, base

        def start(ids, kind, from_prev=False):
            ids = np.asarray(ids, np.int64)
            ids = ids[(ids >= 0) & (ids < self.num_blocks)]
            if ids.size == 0:
                return
            self.kind[ids] = kind
            self.t0[ids] = now
            if from_prev:
                # fade the colour the block had, not its new (free) one
                keep = self.prev_base[ids]
                self.from_base[ids] = np.where(keep == FREE, self.from_base[ids], keep)

        start(events.released, ANIM_FADE_OUT, from_prev=True)
        start(events.alloc, ANIM_FADE_IN)
        start(events.preempted, ANIM_PREEMPT)
        start(events.evict, ANIM_EVICT)
        if events.cow.size:
            start(events.cow.reshape(-1), ANIM_COW)

    def active(self, now: float) -> np.ndarray:
        return (self.kind > 0) & (now - self.t0 < self._dur[self.kind])

    def frame(self, now: float) -> np.ndarray:
        """uint16 [rows, cols] palette indices."""
        idx = self.base.copy()
        age = now - self.t0
        frac = age / np.maximum(self._dur[self.kind], 1e-9)
        live = (self.kind > 0) & (frac < 1.0)
        self.kind[(self.kind > 0) & ~live] = ANIM_NONE
        if live.any():
            ids = np.flatnonzero(live)
            k = self.kind[ids]
            f = frac[ids]
            stage = np.minimum((f * FADE_STAGES).astype(np.int64), FADE_STAGES - 1)
            variant = np.zeros(ids.size, np.int64)
            src = self.base[ids].astype(np.int64)
            fin = k == ANIM_FADE_IN
            variant[fin] = _FADE_V0 + stage[fin]                      # free -> colour
            fout = k == ANIM_FADE_OUT
            variant[fout] = _FADE_V0 + (FADE_STAGES - 1 - stage[fout])  # colour -> free
            src[fout] = self.from_base[ids[fout]]
            for kind, j in _FLASH_INDEX.items():
                m = k == kind
                variant[m] = _FLASH_V0 + j * FLASH_STAGES + stage[m]
            idx[ids] = (variant * NBASE + src).astype(np.uint16)
        img = self._image
        img[: self.num_blocks] = idx
        return img.reshape(self.rows, self.cols)

    def decode(self, index_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(variant, base) of palette indices: what a cell shows, for tests and legends."""
        a = np.asarray(index_image, np.int64)
        return a // NBASE, a % NBASE


def variant_name(variant: int) -> str:
    if variant == 0:
        return "steady"
    if variant < _FLASH_V0:
        return "fade"
    return list(FLASHES)[(variant - _FLASH_V0) // FLASH_STAGES]
