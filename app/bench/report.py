"""What both Qt benchmarks share: the machine line, the frame-time statistics, the
offscreen fallback and the JSON file they write."""

from __future__ import annotations

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


def check_json(path: str | None) -> None:
    """A bad --json path is one line before the benchmark runs, not after it."""
    if path:
        from tinyserve_core.writers import check_writable
        check_writable(path, "--json")


def write_json(path: str | None, out: dict) -> None:
    """Write the results where --json says (nothing without it), through the one atomic
    writer, and say so."""
    if path:
        from tinyserve_core.writers import write_json as write
        write(path, out, "--json")
        print(f"wrote {path}")
