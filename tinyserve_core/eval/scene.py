"""The scene lab measured end to end against analytic ground truth (`tinyserve eval scene`).

Held-out views (PSNR, SSIM, semantic mIoU), query top-1 accuracy over a query file, every
planned path checked against the exact primitive geometry, and latencies (p50/p95)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..loaders import MiB, FileContext, iter_jsonl

TARGETS = {"psnr": 30.0, "miou": 0.9, "query_accuracy": 0.9, "paths_collision_free": 1.0,
           "query_p95_ms": 100.0, "plan_p95_ms": 500.0, "bake_render_p95_ms": 60.0}
QUERY_KEYS = ("query", "expected")
# The shipped set is 40 lines in 2 kB; every query is embedded and answered in the run.
MAX_QUERY_FILE_BYTES = 4 * MiB
MAX_QUERIES = 10_000
MAX_QUERY_CHARS = 1000  # the text encoder reads 256 word pieces at most
PLAN_TARGETS = ("red mug", "stack of books", "desk lamp", "green ball", "blue box", "brown box",
                "trash bin", "traffic cone", "potted plant", "chair")


def default_queries(scene: str) -> Path:
    from ..scene.spec import scene_path

    return scene_path(scene).with_suffix(".queries.jsonl")


def load_queries(path: Path, labels: list[str]) -> list[dict]:
    """One JSON object per line: {"query": str, "expected": label | "not found" | "ambiguous"}.

    `expected` is one answer, in the vocabulary of QueryResult.label, because the
    evaluation scores the top-1 answer by equality. A list of acceptable labels is refused:
    a query that several objects answer equally expects "ambiguous" (the query rule returns
    both candidates then), and accepting any of several labels would let a wrong pick
    count as correct."""
    answers = set(labels) | {"not found", "ambiguous"}
    out = []
    for ctx, rec in iter_jsonl(path, max_bytes=MAX_QUERY_FILE_BYTES, max_line_chars=4 * MAX_QUERY_CHARS):
        if not isinstance(rec, dict):
            raise ctx.error("line", f"expected a JSON object, got {type(rec).__name__}")
        for key in rec:
            if key not in QUERY_KEYS:
                raise ctx.error(_short(key), f"unknown key; a query line has {' and '.join(QUERY_KEYS)}")
        q, exp = rec.get("query"), rec.get("expected")
        if not isinstance(q, str) or not q.strip():
            raise ctx.error("query", f"must be a non-empty string, got {_short(q)}")
        if len(q) > MAX_QUERY_CHARS:
            raise ctx.error("query", f"{len(q)} characters is over the limit of {MAX_QUERY_CHARS}")
        if isinstance(exp, list):
            raise ctx.error("expected", "must be one answer, not a list: an object label, 'not found', or "
                                        "'ambiguous' when several objects answer the query")
        if not isinstance(exp, str) or exp not in answers:
            raise ctx.error("expected", f"must be an object label, 'not found' or 'ambiguous'; got {_short(exp)}")
        out.append({"query": q, "expected": exp, "line": ctx.line})
        if len(out) > MAX_QUERIES:
            raise ctx.error("file", f"more than {MAX_QUERIES} queries")
    if not out:
        raise FileContext(str(path)).error("file", "no queries in the file")
    return out


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def scene_queries(scene: str, queries: str | None) -> tuple[Path, list[dict]]:
    """The query file (given, or the scene's own) checked against the scene's labels; cheap,
    so callers run it before anything slow to fail early."""
    from ..scene.spec import load_scene

    qfile = Path(queries) if queries else default_queries(scene)
    return qfile, load_queries(qfile, load_scene(scene).labels[1:])


def path_clearance(spec, result) -> float:
    """Exact distance from the robot's centre to the nearest surface along a path (for the
    ground robot: horizontal distance to anything between the floor gap and its height),
    less the sampling slack: the distance is 1-Lipschitz, so half the sample spacing."""
    from ..scene.geometry import footprint_distance, scene_sdf
    from ..scene.planner import FLOOR_GAP, GROUND_HEIGHT

    path = np.asarray(result.path, dtype=np.float64)
    fine = [path[:1]]
    for a, b in zip(path[:-1], path[1:]):  # 5 mm steps keep the slack small
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / 0.005)))
        fine.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
    path = np.concatenate(fine)
    spacing = float(np.linalg.norm(np.diff(path, axis=0), axis=1).max()) if len(path) > 1 else 0.0
    pts = torch.tensor(path)
    if result.robot.kind == "gripper":
        return float(scene_sdf(spec, pts).min()) - spacing / 2
    z0, z1 = spec_floor(spec) + FLOOR_GAP, spec_floor(spec) + GROUND_HEIGHT
    d = min(float(footprint_distance(p, pts[:, :2], z0, z1).min())
            for o in spec.objects if o.label != spec.floor_label for p in o.primitives)
    return d - spacing / 2


def spec_floor(spec) -> float:
    """Height of the floor's top surface."""
    return max(p.bounds()[1][2] for p in spec.object(spec.floor_label).primitives)


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def render_latency(lab, size: int = 256) -> dict:
    """Bake and motion frames at 20 orbit poses: latency p50/p95, and the adaptive bake
    frame's PSNR and label agreement against the every-pixel frame of the same pose."""
    from ..scene.metrics import psnr

    lab.render(lab.camera(size=size))
    times: dict[str, list[float]] = {"bake": [], "motion": []}
    mse, agree = [], []
    for az in range(0, 360, 18):
        c = lab.camera(azimuth=az, elevation=40, size=size)
        for quality, ms in times.items():
            t = time.perf_counter()
            frame = lab.render(c, quality)
            ms.append((time.perf_counter() - t) * 1000)
            if quality == "bake":
                every = lab.bake.render(c, adaptive=False)
                mse.append(float(np.mean((frame.rgb - every.rgb) ** 2)))
                agree.append(float((frame.label == every.label).mean()))
    return {f"{q}_{size}_p{p}_ms": pct(ms, p) for q, ms in times.items() for p in (50, 95)} | {
        "device": str(lab.device), "bake_vs_every_pixel_psnr": psnr(float(np.mean(mse))),
        "bake_vs_every_pixel_labels": float(np.mean(agree))}


def evaluate(scene: str = "room", queries: str | None = None, weights: str | None = None,
             progress=None, device: str = "cpu") -> dict:
    from ..scene.lab import SceneLab
    from ..scene.metrics import evaluate_views
    from ..scene.planner import Robot

    qfile, qs = scene_queries(scene, queries)
    lab = SceneLab(scene, weights, device)
    report: dict = {"scene": lab.spec.name, "weights": str(lab.weights_file), "torch_threads": torch.get_num_threads()}
    step = progress or (lambda name: None)

    step("held-out views (full quality)")
    report["views_full"] = evaluate_views(lab.spec, lambda c: lab.render(c, "full"))
    step("held-out views (bake)")
    report["views_bake"] = evaluate_views(lab.spec, lambda c: lab.render(c, "bake"))

    step("render latency")
    cam = lab.camera(size=256)
    report["render"] = render_latency(lab)
    t = time.perf_counter()
    lab.render(cam, "full")
    report["render"]["full_256_ms"] = (time.perf_counter() - t) * 1000

    step("queries")
    frame = lab.render(cam)
    lab.query("warm up", frame)  # loads the text encoder and embeds the objects once
    rows, lat = [], []
    for q in qs:
        r = lab.query(q["query"], frame)
        lat.append(r.latency_ms)
        rows.append({"query": q["query"], "expected": q["expected"], "answer": r.label,
                     "candidates": [c.label for c in r.candidates], "correct": r.label == q["expected"],
                     "ms": r.latency_ms})
    acc = float(np.mean([r["correct"] for r in rows]))
    report["queries"] = {"file": str(qfile), "n": len(rows), "accuracy": acc, "p50_ms": pct(lat, 50),
                         "p95_ms": pct(lat, 95), "rows": rows}

    step("planning")
    plans, plat = [], []
    for robot in (Robot("ground", 0.12), Robot("gripper", 0.05), Robot("ground", 0.2)):
        for target in PLAN_TARGETS:
            r = lab.plan(target, robot)
            row = {"robot": robot.kind, "radius": robot.radius, "target": target, "status": r.status,
                   "length": r.length, "min_clearance": r.min_clearance, "ms": r.planning_ms}
            if r.solved:
                plat.append(r.planning_ms)
                gt = path_clearance(lab.spec, r)
                row.update(gt_clearance=gt - robot.radius, collision_free=bool(gt >= robot.radius))
            plans.append(row)
    solved = [p for p in plans if p["status"] == "solved"]
    report["planning"] = {"n": len(plans), "solved": len(solved),
                          "unreachable": sum(p["status"] != "solved" for p in plans),
                          "collision_free": float(np.mean([p["collision_free"] for p in solved])) if solved else float("nan"),
                          "p50_ms": pct(plat, 50), "p95_ms": pct(plat, 95), "rows": plans}
    report["targets"] = TARGETS
    return report


def summary_rows(rep: dict) -> list[tuple[str, str, str]]:
    v, b, q, p, r = rep["views_full"], rep["views_bake"], rep["queries"], rep["planning"], rep["render"]
    t = rep["targets"]
    return [
        ("PSNR held-out (full), dB", f"{v['psnr']:.2f} (min {v['psnr_min']:.2f})", f">= {t['psnr']}"),
        ("SSIM held-out (full)", f"{v['ssim']:.4f}", ""),
        ("semantic mIoU (full)", f"{v['miou']:.4f}", f">= {t['miou']}"),
        ("PSNR / mIoU (bake)", f"{b['psnr']:.2f} / {b['miou']:.4f}", ""),
        ("query top-1 accuracy", f"{q['accuracy'] * 100:.1f}% of {q['n']}", f">= {t['query_accuracy'] * 100:.0f}%"),
        ("query latency p50 / p95, ms", f"{q['p50_ms']:.1f} / {q['p95_ms']:.1f}", f"<= {t['query_p95_ms']:.0f}"),
        ("paths solved / planned", f"{p['solved']} / {p['n']}", ""),
        ("solved paths collision-free", f"{p['collision_free'] * 100:.0f}%", "100%"),
        ("plan latency p50 / p95, ms", f"{p['p50_ms']:.1f} / {p['p95_ms']:.1f}", f"<= {t['plan_p95_ms']:.0f}"),
        ("bake render 256x256 p50 / p95, ms", f"{r['bake_256_p50_ms']:.1f} / {r['bake_256_p95_ms']:.1f}", f"<= {t['bake_render_p95_ms']:.0f}"),
        ("motion render 256x256 p50 / p95, ms", f"{r['motion_256_p50_ms']:.1f} / {r['motion_256_p95_ms']:.1f}", ""),
        ("bake frame vs every-pixel frame", f"{r['bake_vs_every_pixel_psnr']:.1f} dB, labels "
                                            f"{r['bake_vs_every_pixel_labels'] * 100:.2f}%", ""),
        ("full render 256x256, ms", f"{r['full_256_ms']:.0f}", ""),
    ]
