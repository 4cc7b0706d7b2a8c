"""What the Scene tab writes to disk: the planned path (JSON with its metrics, CSV of
waypoints) and the query log (JSON lines). PNG screenshots are Qt's own `grab()`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tinyserve_core.errors import InputFileError
from tinyserve_core.writers import AtomicWriter, write_text

PATH_CSV_HEADER = ("index", "x", "y", "z", "yaw", "s")  # s: arc length from the start, metres


def _no_path(result) -> bool:
    return result is None or not result.solved


def write_path_json(path: str | Path, result, scene: str) -> Path:
    if _no_path(result):
        raise InputFileError(str(path), None, "no planned path to export: plan one first")
    write_text(path, json.dumps({"scene": scene, **result.to_dict()}, indent=1), "path JSON")
    return Path(path)


def write_path_csv(path: str | Path, result) -> Path:
    if _no_path(result):
        raise InputFileError(str(path), None, "no planned path to export: plan one first")
    import numpy as np

    pts = np.asarray(result.path)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    with AtomicWriter(path, "path CSV", newline="") as out:
        w = csv.writer(out.file)
        w.writerow(PATH_CSV_HEADER)
        for i, (p, yaw, si) in enumerate(zip(pts, result.yaw, s)):
            w.writerow([i, f"{p[0]:.5f}", f"{p[1]:.5f}", f"{p[2]:.5f}", f"{float(yaw):.5f}", f"{si:.5f}"])
    return Path(path)


def query_record(result, when: float) -> dict:
    """One query log line; `answer` uses the query-file vocabulary (a label, "ambiguous" or
    "not found") so a log can be turned into a regression set for `tinyserve eval scene`."""
    return {"time": when, "query": result.query, "answer": result.label, "status": result.status,
            "latency_ms": round(result.latency_ms, 2), "corrected": result.corrected, "notes": list(result.notes),
            "candidates": [{"label": c.label, "score": round(c.score, 4),
                            "centroid": None if c.extent is None else list(c.extent.centroid),
                            "bbox_min": None if c.extent is None else list(c.extent.bbox_min),
                            "bbox_max": None if c.extent is None else list(c.extent.bbox_max)}
                           for c in result.candidates]}


def write_query_log(path: str | Path, records: list[dict]) -> Path:
    if not records:
        raise InputFileError(str(path), None, "the query log is empty: ask a query first")
    write_text(path, "".join(json.dumps(r) + "\n" for r in records), "query log")
    return Path(path)
