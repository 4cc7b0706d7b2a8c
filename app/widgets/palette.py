"""The serving views' visual language in one place: which channel says what, and the
colours, ramps and glyphs of each (docs/VISUAL_LANGUAGE.md shows them).

* fill = owner: Paul Tol's "muted" qualitative scheme (colour-blind safe, made for
  dark and light grounds); owner k gets OWNER_RGB[k % 9]. No other mark in the pool
  view uses these hues.
* greys (no hue) = no owner: free, cached-free (still hashed, a prefix hit can reuse
  it) and the padding past the last block.
* refcount = a neutral lightness ramp, 1 (dark) to 8+ (white), drawn as a strip on
  the cell's right edge, with a colour bar; the number itself when zoomed in.
* events = white glyphs that fade out, never fills; the glyph's shape says which.
* copy-on-write = a fading white arrow from the source block to the copy.
Qt-free on purpose: the numbers are tested without a display.
"""

from __future__ import annotations

import numpy as np

# Paul Tol, "muted" (https://personal.sron.nl/~pault/#sec:qualitative), in his order
OWNER_RGB = ((204, 102, 119), (51, 34, 136), (221, 204, 119), (17, 119, 51),
             (136, 204, 238), (136, 34, 85), (68, 170, 153), (153, 153, 51),
             (170, 68, 153))
NUM_OWNER_COLOURS = len(OWNER_RGB)

BACKGROUND_RGB = (18, 18, 22)
PAD_RGB = (12, 12, 13)            # past the last block
FREE_RGB = (46, 46, 50)           # free, never hashed (or evicted)
CACHED_RGB = (108, 108, 112)      # free but hashed: reusable by a prefix hit, evictable
EMPTY_SLOT_RGB = FREE_RGB         # the unfilled part of an owned block

# refcount ramp: neutral greys, so it can never be read as an owner
REFCOUNT_MAX = 8                  # 8 and more share the brightest step
REFCOUNT_RGB = tuple(tuple(int(round(v)) for v in (g, g, g))
                     for g in np.linspace(70, 255, REFCOUNT_MAX))

# events: white glyphs (pyqtgraph symbol names), faded over DURATION_S seconds
EVENT_RGB = (255, 255, 255)
EVENT_GLYPHS = {"alloc": "o", "free": "x", "evict": "t", "preempt": "s", "cow": "arrow"}
EVENT_WORDS = {"alloc": "allocated", "free": "freed", "evict": "evicted (hash dropped)",
               "preempt": "freed by a preemption", "cow": "copy-on-write: source -> copy"}
EVENT_SHORT = {"alloc": "alloc", "free": "freed", "evict": "evicted", "preempt": "preempted",
               "cow": "copy-on-write"}
EVENT_DURATION_S = {"alloc": 0.5, "free": 0.6, "evict": 1.0, "preempt": 1.0, "cow": 1.2}
FADE_STEPS = 4                    # alpha levels an event passes through


def owner_rgb(owner: int) -> tuple[int, int, int]:
    return OWNER_RGB[int(owner) % NUM_OWNER_COLOURS]


def refcount_rgb(ref: int) -> tuple[int, int, int]:
    return REFCOUNT_RGB[int(np.clip(ref, 1, REFCOUNT_MAX)) - 1]


def refcount_label(ref: int) -> str:
    return f"{REFCOUNT_MAX}+" if ref >= REFCOUNT_MAX else str(int(ref))


def fade_alpha(age_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Alpha 0..255 of an event `age_s` old, in FADE_STEPS steps (0 once it is over)."""
    frac = np.clip(np.asarray(age_s, np.float64) / duration_s, 0.0, 1.0)
    step = np.minimum((frac * FADE_STEPS).astype(np.int64), FADE_STEPS)
    return np.where(step >= FADE_STEPS, 0, (255 * (FADE_STEPS - step) / FADE_STEPS)).astype(np.int64)


# line colours of the metric plots and the selection view's layers: Okabe-Ito
# (colour-blind safe); these views have no owner fills, so hues may repeat there
SERIES_RGB = ((86, 180, 233), (230, 159, 0), (0, 158, 115), (240, 228, 66),
              (204, 121, 167), (213, 94, 0), (0, 114, 178), (220, 220, 220))

# selection heatmap: viridis scores; hits and misses as dots
SELECTED_OUTLINE_RGB = (255, 255, 255)
ORACLE_KEPT_RGB = (0, 158, 115)
ORACLE_MISSED_RGB = (213, 94, 0)
NO_SCORE_RGB = (70, 72, 84)
UNSELECTED_DIM = 0.45             # unselected cells at this brightness: readable at any size

ERROR_CSS = "#ff7b72"
HINT_CSS = "#9a9aa8"


def rgb_css(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb[:3])
