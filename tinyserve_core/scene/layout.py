"""The optional layout of a scene spec: rooms (named floor areas), the doorways joining
them, and where the eval's robots start and what they plan to.

    "rooms": [{"name": "kitchen", "aliases": ["galley"], "min": [x, y], "max": [x, y]}, ...],
    "doorways": [{"name": "doorway", "rooms": ["living room", "kitchen"], "min": [x, y], "max": [x, y]}],
    "planning": {"starts": {"ground": [x, y(, yaw)], "gripper": [x, y, z]}, "targets": [label, ...]}

Everything is checked against the scene it belongs to: rooms lie inside the bounds and do
not overlap, a doorway touches both of its rooms and nothing but the floor stands in it
(a blocked doorway would make "planning through the doorway" fail for a reason the spec
hides), starts lie inside the bounds, targets are object labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..loaders import FileContext
from .fields import MAX_COORD, number_field, show as _show

ROBOT_STARTS = {"ground": (2, 3), "gripper": (3, 3)}  # kind -> allowed lengths (x, y[, yaw] / x, y, z)
MAX_ROOMS = 64
_TOUCH = 1e-6  # m: rectangles this close count as touching (float noise in hand-written specs)


@dataclass(frozen=True)
class Room:
    name: str
    lo: tuple[float, float]
    hi: tuple[float, float]
    aliases: tuple[str, ...] = ()

    def contains(self, x: float, y: float) -> bool:
        return self.lo[0] <= x <= self.hi[0] and self.lo[1] <= y <= self.hi[1]


@dataclass(frozen=True)
class Doorway:
    name: str
    rooms: tuple[str, str]
    lo: tuple[float, float]
    hi: tuple[float, float]

    def contains(self, x: float, y: float, slack: float = 0.0) -> bool:
        return (self.lo[0] - slack <= x <= self.hi[0] + slack) and (self.lo[1] - slack <= y <= self.hi[1] + slack)


@dataclass(frozen=True)
class Layout:
    rooms: tuple[Room, ...] = ()
    doorways: tuple[Doorway, ...] = ()
    starts: dict | None = None  # robot kind -> start tuple
    targets: tuple[str, ...] = ()

    def room_at(self, x: float, y: float) -> str:
        """The room holding the point, "" outside every room."""
        return next((r.name for r in self.rooms if r.contains(x, y)), "")


def _overlap(alo, ahi, blo, bhi, slack: float = _TOUCH) -> tuple[float, float]:
    """Overlap of two rectangles along x and y (negative: a gap)."""
    return tuple(min(ahi[i], bhi[i]) - max(alo[i], blo[i]) + slack for i in range(2))


def _rect(d, ctx: FileContext, where: str, bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = [], []
    for key, out in (("min", lo), ("max", hi)):
        v = d.get(key)
        if not isinstance(v, list) or len(v) != 2:
            raise ctx.error(f"{where}.{key}", f"expected a list of 2 numbers (x, y), got {_show(v)}")
        out.extend(number_field(x, ctx, f"{where}.{key}[{j}]", -MAX_COORD, MAX_COORD) for j, x in enumerate(v))
    if any(h <= l for l, h in zip(lo, hi)):
        raise ctx.error(where, f"max must exceed min on x and y, got {tuple(lo)} .. {tuple(hi)}")
    blo, bhi = bounds
    if any(l < b - _TOUCH for l, b in zip(lo, blo)) or any(h > b + _TOUCH for h, b in zip(hi, bhi)):
        raise ctx.error(where, f"{tuple(lo)} .. {tuple(hi)} is outside the scene's bounds "
                               f"{tuple(blo[:2])} .. {tuple(bhi[:2])}")
    return tuple(lo), tuple(hi)


def _list(data: dict, key: str, ctx: FileContext, limit: int) -> list:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise ctx.error(key, f"must be a list, got {_show(items)}")
    if len(items) > limit:
        raise ctx.error(key, f"{len(items)} entries is over the limit of {limit}")
    return items


def _check_keys(d, ctx: FileContext, where: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise ctx.error(where, f"expected an object, got {_show(d)}")
    for key in d:
        if key not in allowed:
            raise ctx.error(f"{where}.{_show(key)[1:-1]}", f"unknown key; allowed: {', '.join(allowed)}")


def _rooms(data: dict, ctx: FileContext, bounds, words, text) -> tuple[Room, ...]:
    rooms: list[Room] = []
    for i, d in enumerate(_list(data, "rooms", ctx, MAX_ROOMS)):
        where = f"rooms[{i}]"
        _check_keys(d, ctx, where, ("name", "aliases", "min", "max"))
        name = text(d.get("name"), ctx, f"{where}.name").strip().lower()
        if any(name == r.name for r in rooms):
            raise ctx.error(f"{where}.name", f"{_show(name)} is already used")
        lo, hi = _rect(d, ctx, where, bounds)
        aliases = words(d["aliases"], ctx, f"{where}.aliases") if "aliases" in d else ()
        for r in rooms:
            ox, oy = _overlap(lo, hi, r.lo, r.hi, slack=-_TOUCH)
            if ox > 0 and oy > 0:
                raise ctx.error(where, f"overlaps room {r.name!r}: rooms share at most an edge")
        rooms.append(Room(name, lo, hi, aliases))
    return tuple(rooms)


def _doorways(data: dict, ctx: FileContext, bounds, rooms: tuple[Room, ...], blockers, text) -> tuple[Doorway, ...]:
    by_name = {r.name: r for r in rooms}
    out: list[Doorway] = []
    for i, d in enumerate(_list(data, "doorways", ctx, MAX_ROOMS)):
        where = f"doorways[{i}]"
        _check_keys(d, ctx, where, ("name", "rooms", "min", "max"))
        name = text(d.get("name"), ctx, f"{where}.name").strip()
        pair = d.get("rooms")
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ctx.error(f"{where}.rooms", f"must name the 2 rooms it joins, got {_show(pair)}")
        pair = [p.strip().lower() for p in pair]
        for p in pair:
            if p not in by_name:
                raise ctx.error(f"{where}.rooms", f"{_show(p)} is not a room; have {', '.join(by_name) or 'none'}")
        if pair[0] == pair[1]:
            raise ctx.error(f"{where}.rooms", "joins a room to itself")
        lo, hi = _rect(d, ctx, where, bounds)
        for p in pair:
            if min(_overlap(lo, hi, by_name[p].lo, by_name[p].hi)) < 0:
                raise ctx.error(where, f"does not touch room {p!r}: a doorway joins the rooms it names")
        for label, (plo, phi) in blockers:
            if min(_overlap(lo, hi, plo, phi, slack=-_TOUCH)) > 0:
                raise ctx.error(where, f"is blocked by {label!r}: only the floor may lie in a doorway")
        out.append(Doorway(name, (pair[0], pair[1]), lo, hi))
    return tuple(out)


def _planning(data: dict, ctx: FileContext, bounds, labels: set[str], floor: str) -> tuple[dict | None, tuple[str, ...]]:
    plan = data.get("planning")
    if plan is None:
        return None, ()
    _check_keys(plan, ctx, "planning", ("starts", "targets"))
    starts = {}
    raw = plan.get("starts", {})
    _check_keys(raw, ctx, "planning.starts", tuple(ROBOT_STARTS))
    for kind, v in raw.items():
        where = f"planning.starts.{kind}"
        lengths = ROBOT_STARTS[kind]
        if not isinstance(v, list) or len(v) not in lengths:
            want = "x, y or x, y, yaw" if kind == "ground" else "x, y, z"
            raise ctx.error(where, f"expected {want}, got {_show(v)}")
        lo, hi = bounds
        pos = [number_field(x, ctx, f"{where}[{j}]", lo[j], hi[j]) for j, x in enumerate(v[:2 if kind == "ground" else 3])]
        if kind == "ground":
            pos.append(number_field(v[2], ctx, f"{where}[2]", -10.0, 10.0) if len(v) == 3 else 0.0)
        starts[kind] = tuple(pos)
    targets = plan.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ctx.error("planning.targets", f"must be a list of object labels, got {_show(targets)}")
    for j, t in enumerate(targets):
        if t not in labels or t == floor:
            raise ctx.error(f"planning.targets[{j}]", f"{_show(t)} is not an object label (the floor is no target)")
    return starts or None, tuple(targets)


def parse_layout(data: dict, ctx: FileContext, bounds, objects, floor: str, words, text) -> Layout:
    """The layout sections of a decoded spec; `words` and `text` are the spec's own field
    readers, so names and aliases follow the same rules as object labels."""
    flat = ((bounds[0][0], bounds[0][1]), (bounds[1][0], bounds[1][1]))
    rooms = _rooms(data, ctx, flat, words, text)
    floor_top = max(p.bounds()[1][2] for o in objects if o.label == floor for p in o.primitives)
    # what stands above the floor's surface, by primitive: a doorway must hold none of it
    blockers = [(o.label, (p.bounds()[0][:2], p.bounds()[1][:2])) for o in objects if o.label != floor
                for p in o.primitives if p.bounds()[1][2] > floor_top + _TOUCH]
    doorways = _doorways(data, ctx, flat, rooms, blockers, text)
    starts, targets = _planning(data, ctx, bounds, {o.label for o in objects}, floor)
    return Layout(rooms, doorways, starts, targets)
