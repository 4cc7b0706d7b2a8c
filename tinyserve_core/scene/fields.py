"""Readers of a spec's numeric fields, shared by the scene spec, its layout and the
weights metadata: every bad value is one InputFileError `path: field: problem`."""

from __future__ import annotations

import math

from ..loaders import FileContext

# Scenes are rooms and yards in metres: every coordinate lies within a kilometre, which also
# keeps squared distances and grid indices far inside float32 (a 1e300 size passes as a
# float64 but turns into inf in the renderer's tensors).
MAX_COORD = 1000.0


def number_field(value, ctx: FileContext, where: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    """A finite number in [lo, hi] (or (lo, hi] with open_lo); bools are not numbers."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ctx.error(where, f"expected a number, got {show(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise ctx.error(where, f"must be a finite number, got {value!r}")
    if x < lo or x > hi or (open_lo and x == lo):
        raise ctx.error(where, f"{value!r} is out of range {'(' if open_lo else '['}{lo:g}, {hi:g}]")
    return x


def vec3_field(value, ctx: FileContext, where: str, lo: float = -MAX_COORD, hi: float = MAX_COORD,
         *, open_lo: bool = False) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise ctx.error(where, f"expected a list of 3 numbers, got {show(value)}")
    return tuple(number_field(v, ctx, f"{where}[{i}]", lo, hi, open_lo=open_lo) for i, v in enumerate(value))


def box_field(value, ctx: FileContext, where: str, lo_key: str, hi_key: str):
    """An axis-aligned box {lo_key: [x, y, z], hi_key: [x, y, z]} with hi > lo on every axis."""
    if not isinstance(value, dict):
        raise ctx.error(where, f"must be an object with {lo_key} and {hi_key}")
    lo = vec3_field(value.get(lo_key), ctx, f"{where}.{lo_key}")
    hi = vec3_field(value.get(hi_key), ctx, f"{where}.{hi_key}")
    if any(h <= l for l, h in zip(lo, hi)):
        raise ctx.error(where, f"{hi_key} must exceed {lo_key} on every axis, got {lo} .. {hi}")
    return lo, hi


def show(value) -> str:
    """A value for a message, cut short: a hostile file may hold megabytes in one field."""
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."
