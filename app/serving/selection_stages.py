"""The two stages of a two-stage selector (`twostage`) on the Cache selection heatmap.

Kept pages carry the view's white outline; a page that stage 1 (the bound) made a
candidate but stage 2 (estimated attention) dropped gets corner ticks in its own
colour: a glyph on the cell's corners, so it never hides the score fill, the outline
or the oracle dot in the middle."""

from __future__ import annotations

import numpy as np

CANDIDATE = np.array([255, 160, 40, 255], np.uint8)
LEGEND = (tuple(CANDIDATE[:3]), "corner ticks = candidate, not kept (twostage)")


def mark_candidates(img5: np.ndarray, candidates: np.ndarray | None, selected: np.ndarray, cell: int) -> None:
    """Draws the ticks into `img5` (uint32 [P, cell, S, cell], one value per RGBA pixel)."""
    if candidates is None:
        return
    p, s = np.nonzero(candidates & ~selected)
    if not p.size:
        return
    c = np.ascontiguousarray(CANDIDATE).view(np.uint32)[0]
    arm = max(1, cell // 3)
    for y, x in ((0, 0), (0, cell - 1), (cell - 1, 0), (cell - 1, cell - 1)):
        img5[p, y, s, min(x, cell - arm):min(x, cell - arm) + arm] = c   # horizontal arm
        img5[p, min(y, cell - arm):min(y, cell - arm) + arm, s, x] = c   # vertical arm
