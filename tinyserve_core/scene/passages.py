"""Why a target cannot be reached: the narrowest passage on the widest route.

On a clearance map (metres from each grid point to the nearest obstacle), a route that
keeps clearance >= t exists between two cells when they share a component of
{clearance >= t}. The largest such t for the start and the goal region is the route's
bottleneck: the passage there is about 2 t wide, and a robot that needs more clearance
than t cannot pass. A bisection over t with connected-component labelling finds it in a
dozen labellings, in 2D or 3D alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Passage:
    width: float  # metres: twice the clearance at the narrowest point of the widest route
    required: float  # metres: the width the robot needs (twice its required clearance)
    at: tuple[float, ...] | None  # where the narrowest point is (world), None when the goal is walled off

    def describe(self, target: str) -> str:
        if self.width == 0:
            return f"{target!r} is walled off from the start: no passage leads there"
        where = "" if self.at is None else " at ({})".format(", ".join(f"{v:.2f}" for v in self.at))
        return (f"the passage{where} is {self.width:.2f} m wide, narrower than the "
                f"{self.required:.2f} m the robot needs to reach {target!r}")


def _connected(clearance: np.ndarray, t: float, start: tuple, goal: np.ndarray) -> tuple[bool, np.ndarray]:
    comp = ndimage.label(clearance >= t)[0]
    s = comp[start]
    return bool(s and (comp[goal] == s).any()), comp


def bottleneck(clearance: np.ndarray, start: tuple, goal: np.ndarray, need: float, lo: np.ndarray,
               voxel: float) -> Passage:
    """The narrowest passage between the start cell and any goal cell (goal: bool mask),
    for a robot that needs clearance `need`."""
    lo_t, hi_t = 0.0, float(min(need, clearance[start]))
    ok, _ = _connected(clearance, voxel * 1e-3, start, goal)
    if not ok:
        return Passage(0.0, 2 * need, None)
    if _connected(clearance, hi_t, start, goal)[0]:  # wide enough all the way: the goal region itself is tight
        return Passage(2 * hi_t, 2 * need, None)
    while hi_t - lo_t > voxel / 8:  # bisection to an eighth of a voxel
        mid = (lo_t + hi_t) / 2
        if _connected(clearance, mid, start, goal)[0]:
            lo_t = mid
        else:
            hi_t = mid
    return Passage(2 * lo_t, 2 * need, _pinch(clearance, start, goal, lo_t, hi_t, lo, voxel))


def _pinch(clearance, start, goal, lo_t: float, hi_t: float, lo, voxel: float) -> tuple[float, ...] | None:
    """Where the widest route is narrowest: open at lo_t, the free space falls apart at
    hi_t into pieces joined by "bridge" cells (clearance in [lo_t, hi_t)). A breadth-first
    walk from the start's piece over bridges to a piece holding the goal crosses the
    pinch; the first bridge on that walk is the narrowest passage nearest the start."""
    from collections import deque

    struct = np.ones((3,) * clearance.ndim, dtype=bool)
    above = ndimage.label(clearance >= hi_t)[0]
    bridges, _ = ndimage.label((clearance >= lo_t) & (clearance < hi_t), struct)
    links: dict[int, set[int]] = {}  # bridge piece -> pieces of `above` it touches
    for i, sl in enumerate(ndimage.find_objects(bridges), 1):
        if sl is None:
            continue
        grown = tuple(slice(max(0, x.start - 1), x.stop + 1) for x in sl)
        near = ndimage.binary_dilation(bridges[grown] == i, struct)
        links[i] = set(np.unique(above[grown][near]).tolist()) - {0}
    goal_pieces = set(np.unique(above[goal]).tolist()) - {0}
    goal_bridges = set(np.unique(bridges[goal]).tolist()) - {0}
    first = {above[start]: None}  # piece -> the first bridge crossed on the way there
    todo = deque([above[start]])
    while todo:
        piece = todo.popleft()
        for b, touching in links.items():
            if piece not in touching:
                continue
            via = first[piece] or b
            if b in goal_bridges or goal_pieces & touching:
                cells = np.argwhere(bridges == via)
                return tuple(float(v) for v in lo + cells.mean(0) * voxel)
            for nxt in touching - set(first):
                first[nxt] = via
                todo.append(nxt)
    return None
