"""Axis ticks a short plot can hold: few, round, in plain numbers (never 1e+06 or a
'x0.001' scale), chosen for the pixels the axis has."""

from __future__ import annotations

import math


def compact(v: float) -> str:
    """12 -> '12', 0.25 -> '0.25', 1500 -> '1.5k', 2_000_000 -> '2M'."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}" if a and a < 1 else f"{round(v, 2):g}"


def nice_step(span: float, max_ticks: int) -> float:
    """The smallest 1-2-2.5-5 step that puts between 2 and `max_ticks` ticks on
    [0, span] (a span shorter than any such step gets the span itself)."""
    span = max(span, 1e-12)
    mag = 10 ** math.floor(math.log10(span / max(1, max_ticks)))
    for _ in range(4):
        for m in (1, 2, 2.5, 5):
            s = m * mag
            if math.floor(span / s + 1e-9) + 1 <= max_ticks:
                return s
        mag *= 10
    return span


def nice_ticks(lo: float, hi: float, max_ticks: int, integer: bool = False) -> list[tuple[float, str]]:
    """[(value, label)] from lo to hi, at most max_ticks; integers only when `integer`."""
    step = nice_step(hi - lo, max(2, max_ticks))
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * max(1.0, abs(hi)):
        out.append((v, compact(0.0 if abs(v) < step * 1e-9 else v)))
        v += step
    return out


def ticks_for_pixels(lo: float, hi: float, pixels: float, font_px: float,
                     integer: bool = False) -> list[tuple[float, str]]:
    """Ticks for an axis `pixels` long: one label per ~2.2 text heights, at least two."""
    return nice_ticks(lo, hi, max(2, int(pixels / (2.2 * max(font_px, 1.0)))), integer)
