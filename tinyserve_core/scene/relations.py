"""Spatial and attribute words answered from the scene's geometry, not the embedding:
which objects rest on, lie under or stand next to another, which is biggest, what
colour or material each is, and which lies to the left as the camera sees it.

Facts come from the spec's primitives (exact shapes), so "the mug on the table" holds
because the mug's base lies on the tabletop's upper face inside its outline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import SceneObject, SceneSpec

CONTACT = 0.05  # m: a base this close to a top surface rests on it
NEAR_TIE = 0.1  # m: objects this much farther than the nearest are as near ("next to the lamp")
NEAR_MAX = 1.0  # m: beyond this nothing is "near"
SIZE_LIMITS = (0.3, 1.0)  # m, largest extent: small below the first, large from the second
# Reference colours for objects whose spec names none (sRGB, 0-1).
NAMED_RGB = {"red": (0.8, 0.1, 0.1), "green": (0.2, 0.6, 0.2), "blue": (0.15, 0.3, 0.8), "yellow": (0.95, 0.85, 0.2),
             "orange": (1.0, 0.5, 0.05), "brown": (0.55, 0.36, 0.2), "black": (0.1, 0.1, 0.1),
             "white": (0.95, 0.95, 0.95), "grey": (0.5, 0.5, 0.5), "pink": (1.0, 0.6, 0.7), "purple": (0.5, 0.2, 0.6)}


@dataclass(frozen=True)
class Box:
    lo: np.ndarray
    hi: np.ndarray

    def contains_xy(self, p) -> bool:
        return bool(np.all(p[:2] >= self.lo[:2] - 1e-9) and np.all(p[:2] <= self.hi[:2] + 1e-9))


@dataclass
class ObjectFacts:
    label: str
    box: Box  # the whole object
    parts: list[Box]  # one per primitive: a table's top is one part, its legs others
    colours: set[str]
    materials: set[str]
    size: str
    structure: bool

    @property
    def centre(self) -> np.ndarray:
        return (self.box.lo + self.box.hi) / 2

    @property
    def volume(self) -> float:
        return float(np.prod(self.box.hi - self.box.lo))

    def measure(self, name: str) -> float:
        return {"volume": self.volume, "height": float(self.box.hi[2] - self.box.lo[2]),
                "top": float(self.box.hi[2])}[name]


def _rgb_name(rgb) -> str:
    return min(NAMED_RGB, key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, NAMED_RGB[n])))


def facts_of(o: SceneObject) -> ObjectFacts:
    parts = [Box(np.array(lo, dtype=float), np.array(hi, dtype=float)) for lo, hi in (p.bounds() for p in o.primitives)]
    lo, hi = o.bounds()
    box = Box(np.array(lo, dtype=float), np.array(hi, dtype=float))
    if o.colors:
        colours = set(o.colors)
    else:  # the colour of the largest part, named
        vols = [float(np.prod(b.hi - b.lo)) for b in parts]
        colours = {_rgb_name(o.primitives[int(np.argmax(vols))].color)}
    extent = float(np.max(box.hi - box.lo))
    size = o.size or ("small" if extent < SIZE_LIMITS[0] else "medium" if extent < SIZE_LIMITS[1] else "large")
    return ObjectFacts(o.label, box, parts, colours, set(o.materials), size, o.structure)


def scene_facts(spec: SceneSpec) -> list[ObjectFacts]:
    return [facts_of(o) for o in spec.objects]


def rests_on(a: ObjectFacts, b: ObjectFacts) -> bool:
    """a's base lies on the upper face of one of b's parts, inside that part's outline."""
    base = a.box.lo[2]
    foot = a.centre
    return any(abs(base - p.hi[2]) <= CONTACT and p.contains_xy(foot) for p in b.parts)


def lies_under(a: ObjectFacts, b: ObjectFacts) -> bool:
    """Some part of b is above the whole of a and covers a's centre (under a tabletop)."""
    return any(p.lo[2] >= a.box.hi[2] - CONTACT and p.contains_xy(a.centre) for p in b.parts)


def lies_above(a: ObjectFacts, b: ObjectFacts) -> bool:
    return a.box.lo[2] >= b.box.hi[2] - CONTACT and b.box.contains_xy(a.centre)


def gap(a: ObjectFacts, b: ObjectFacts) -> float:
    """Distance between the two boxes (0 when they touch or overlap)."""
    d = np.maximum(np.maximum(a.box.lo - b.box.hi, b.box.lo - a.box.hi), 0)
    return float(np.linalg.norm(d))


HOLDS = {"on": rests_on, "under": lies_under, "above": lies_above}


def view_axes(c2w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(right, forward) unit vectors on the floor plane as a camera sees the scene."""
    if c2w is None:
        az = math.radians(30.0)  # the default orbit view (SceneLab.camera)
        right, back = np.array([-math.sin(az), math.cos(az)]), np.array([math.cos(az), math.sin(az)])
    else:
        right, back = np.asarray(c2w)[:2, 0].astype(float), np.asarray(c2w)[:2, 2].astype(float)
    right /= max(np.linalg.norm(right), 1e-9)
    back /= max(np.linalg.norm(back), 1e-9)
    return right, -back


def filter_relation(rel: str, pool: list[int], refs: list[int], facts: list[ObjectFacts],
                    c2w: np.ndarray | None) -> list[int]:
    """The candidates standing in `rel` to any of the reference objects; for graded
    relations (near, left of, ...) the nearest such ones."""
    # the floor and walls are where things are, never what a relation asks for
    pool = [k for k in pool if k not in refs and not facts[k].structure]
    if rel in HOLDS:
        return [k for k in pool if any(HOLDS[rel](facts[k], facts[r]) for r in refs)]
    # beside, not on or under: "next to the table" is not the mug on it
    pool = [k for k in pool if not any(rests_on(facts[k], facts[r]) or rests_on(facts[r], facts[k])
                                       or lies_under(facts[k], facts[r]) for r in refs)]
    if rel != "near":
        right, forward = view_axes(c2w)
        axis, sign = {"left": (right, -1), "right": (right, 1), "front": (forward, -1), "behind": (forward, 1)}[rel]
        pool = [k for k in pool if any(sign * float((facts[k].centre - facts[r].centre)[:2] @ axis) > CONTACT
                                       for r in refs)]
    dist = {k: min(gap(facts[k], facts[r]) for r in refs) for k in pool}
    if not dist:
        return []
    nearest = min(dist.values())
    if rel == "near" and nearest > NEAR_MAX:
        return []
    return [k for k in pool if dist[k] <= nearest + NEAR_TIE]


def extreme(pool: list[int], facts: list[ObjectFacts], measure: str, direction: int) -> list[int]:
    if not pool:
        return []
    return [max(pool, key=lambda k: direction * facts[k].measure(measure))]


def side(pool: list[int], facts: list[ObjectFacts], which: str, c2w: np.ndarray | None) -> list[int]:
    right, _ = view_axes(c2w)
    if not pool:
        return []
    sign = 1 if which == "right" else -1
    return [max(pool, key=lambda k: sign * float(facts[k].centre[:2] @ right))]
