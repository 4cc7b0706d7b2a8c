"""What both Qt benchmarks share: the machine line, the frame-time statistics, the
offscreen fallback and the JSON file they write."""

from __future__ import annotations

import json
import os

import numpy as np


def machine() -> str:
    from tinyserve_core.bench.machine import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def time_stats(ms, count_key: str) -> dict:
    """Median, p95 and max of times in ms, and how many there were under `count_key`
    (each benchmark's JSON names its samples: "frames", "n")."""
    a = np.asarray(ms, dtype=float)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "max_ms": float(a.max()), count_key: int(a.size)}


def offscreen_without_display() -> None:
    """Qt's offscreen platform when there is no display (call before QApplication)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def write_json(path: str | None, out: dict) -> None:
    """Write the results where --json says (nothing without it) and say so."""
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {path}")
