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
QUERY_KEYS = ("query", "expected", "candidates", "category")
# The shipped set is 40 lines in 2 kB; every query is embedded and answered in the run.
MAX_QUERY_FILE_BYTES = 4 * MiB
MAX_QUERIES = 10_000
MAX_QUERY_CHARS = 1000  # the text encoder reads 256 word pieces at most


def plan_targets(spec) -> list[str]:
    """What the eval plans to: the spec's `planning.targets`, else every object that is not
    part of the building (floor, walls)."""
    return list(spec.layout.targets) or [o.label for o in spec.objects if not o.structure]


def rooms_crossed(spec, path) -> dict:
    """Which rooms a path passes through, in order, and whether every change of room
    happens inside a doorway that joins those two rooms (within half a path step: the
    waypoints are 2 cm apart). Points outside every room (a wall's thickness) are skipped."""
    rooms, ok = [], True
    lay = spec.layout
    prev = None
    for x, y in np.asarray(path, dtype=np.float64)[:, :2]:
        room = lay.room_at(x, y)
        if not room:
            continue
        if prev is not None and room != prev[0]:
            mid = ((x + prev[1]) / 2, (y + prev[2]) / 2)
            ok &= any({room, prev[0]} == set(d.rooms) and d.contains(*mid, slack=0.02) for d in lay.doorways)
        if not rooms or rooms[-1] != room:
            rooms.append(room)
        prev = (room, x, y)
    return {"rooms": rooms, "through_doorways": bool(ok)}


def default_queries(scene: str) -> Path:
    from ..scene.spec import scene_path

    return scene_path(scene).with_suffix(".queries.jsonl")


def shipped_query_files(scene: str) -> list[Path]:
    """Every query set shipped beside the scene: <scene>.queries.jsonl first, then
    <scene>.queries.<name>.jsonl (our own larger set, the held-out set, ...)."""
    first = default_queries(scene)
    return [first] + sorted(p for p in first.parent.glob(f"{first.stem}.*.jsonl") if p != first)


def load_queries(path: Path, labels: list[str]) -> list[dict]:
    """One JSON object per line: {"query": str, "expected": label | "not found" | "ambiguous",
    "candidates": [label, ...] (optional, ambiguous only), "category": str (optional)}.

    `expected` is one answer, in the vocabulary of QueryResult.label. A query that several
    objects answer equally expects "ambiguous" and names the set in `candidates`: the
    answer counts only when its candidate set is exactly that set (without `candidates`
    any ambiguous answer counts, and the report says the set was unchecked). A list in
    `expected` is refused: accepting any of several labels would let a wrong pick count."""
    answers = set(labels) | {"not found", "ambiguous"}
    out = []
    for ctx, rec in iter_jsonl(path, max_bytes=MAX_QUERY_FILE_BYTES, max_line_chars=4 * MAX_QUERY_CHARS):
        if not isinstance(rec, dict):
            raise ctx.error("line", f"expected a JSON object, got {type(rec).__name__}")
        for key in rec:
            if key not in QUERY_KEYS:
                raise ctx.error(_short(key), f"unknown key; a query line has {', '.join(QUERY_KEYS)}")
        q, exp = rec.get("query"), rec.get("expected")
        if not isinstance(q, str) or not q.strip():
            raise ctx.error("query", f"must be a non-empty string, got {_short(q)}")
        if len(q) > MAX_QUERY_CHARS:
            raise ctx.error("query", f"{len(q)} characters is over the limit of {MAX_QUERY_CHARS}")
        if isinstance(exp, list):
            raise ctx.error("expected", "must be one answer, not a list: an object label, 'not found', or "
                                        "'ambiguous' with the labels in 'candidates'")
        if not isinstance(exp, str) or exp not in answers:
            raise ctx.error("expected", f"must be an object label, 'not found' or 'ambiguous'; got {_short(exp)}")
        row = {"query": q, "expected": exp, "line": ctx.line, "category": _category(rec.get("category", ""), ctx)}
        if "candidates" in rec:
            row["candidates"] = _candidates(rec["candidates"], exp, set(labels), ctx)
        out.append(row)
        if len(out) > MAX_QUERIES:
            raise ctx.error("file", f"more than {MAX_QUERIES} queries")
    if not out:
        raise FileContext(str(path)).error("file", "no queries in the file")
    return out


def _category(value, ctx) -> str:
    if not isinstance(value, str) or len(value) > 40:
        raise ctx.error("category", f"must be a short string, got {_short(value)}")
    return value


def _candidates(value, expected: str, labels: set[str], ctx) -> list[str]:
    if expected != "ambiguous":
        raise ctx.error("candidates", f"only an 'ambiguous' answer has candidates; expected is {_short(expected)}")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
        raise ctx.error("candidates", f"must be a list of 2 or more object labels, got {_short(value)}")
    bad = [v for v in value if v not in labels]
    if bad:
        raise ctx.error("candidates", f"{_short(bad[0])} is not an object label")
    if len(set(value)) != len(value):
        raise ctx.error("candidates", "names a label twice")
    return sorted(value)


def answer_correct(row: dict, result) -> tuple[bool, bool]:
    """(correct, candidate set checked) for one query and its QueryResult."""
    if result.label != row["expected"]:
        return False, False
    if row["expected"] != "ambiguous" or "candidates" not in row:
        return True, False
    return sorted(c.label for c in result.candidates) == row["candidates"], True


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def scene_queries(scene: str, queries=None) -> list[tuple[Path, list[dict]]]:
    """The query files (given: one path or several; None: every set shipped with the
    scene) checked against the scene's labels; cheap, so callers run it before anything
    slow to fail early."""
    from ..scene.spec import load_scene

    files = shipped_query_files(scene) if not queries else [Path(q) for q in ([queries] if isinstance(queries, (str, Path)) else queries)]
    labels = load_scene(scene).labels[1:]
    return [(f, load_queries(f, labels)) for f in files]


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


def _mean(rows: list[dict]) -> float:
    return float(np.mean([r["correct"] for r in rows])) if rows else float("nan")


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["category"] or "uncategorised", []).append(r)
    return out


def _max_approach(rows: list[dict], kind: str) -> float:
    xs = [r["approach_distance"] for r in rows if r["robot"] == kind and r["approach_distance"] is not None]
    return max(xs) if xs else float("nan")


def category_rows(rep: dict) -> list[tuple[str, str]]:
    """(set name, "category a/b ...") per query set, for the printed report."""
    return [(s["name"], "  ".join(f"{c} {g['accuracy'] * 100:.0f}%/{g['n']}" for c, g in s["by_category"].items()))
            for s in rep["queries"]["sets"]]


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def render_latency(lab, size: int = 256, reference_poses: int = 3) -> dict:
    """Bake and motion frames at 20 orbit poses: latency p50/p95, the adaptive bake
    frame's PSNR and label agreement against the every-pixel frame of the same pose, the
    motion frame's against the bake frame; on
    `reference_poses` of them, both against the 1/8-voxel reference frame
    (`Bake.render_reference`), which tells the fast frame's error from the every-pixel
    frame's own sampling."""
    from ..scene.metrics import psnr

    lab.render(lab.camera(size=size))
    times: dict[str, list[float]] = {"bake": [], "motion": []}
    mse, agree, motion_mse, motion_agree = [], [], [], []
    vs_ref: dict[str, list[tuple[float, float]]] = {"bake": [], "every_pixel": []}
    poses = list(range(0, 360, 18))
    ref_poses = set(poses[::max(1, len(poses) // reference_poses)][:reference_poses]) if reference_poses else set()
    for az in poses:
        c = lab.camera(azimuth=az, elevation=40, size=size)
        for quality, ms in times.items():
            t = time.perf_counter()
            frame = lab.render(c, quality)
            ms.append((time.perf_counter() - t) * 1000)
            if quality == "motion":  # against the still frame it stands in for
                motion_mse.append(float(np.mean((frame.rgb - still.rgb) ** 2)))
                motion_agree.append(float((frame.label == still.label).mean()))
            if quality == "bake":
                still = frame
                every = lab.bake.render(c, adaptive=False)
                mse.append(float(np.mean((frame.rgb - every.rgb) ** 2)))
                agree.append(float((frame.label == every.label).mean()))
                if az in ref_poses:
                    ref = lab.bake.render_reference(c)
                    for name, img in (("bake", frame), ("every_pixel", every)):
                        vs_ref[name].append((float(np.mean((img.rgb - ref.rgb) ** 2)),
                                             float((img.label == ref.label).mean())))
    out = {f"{q}_{size}_p{p}_ms": pct(ms, p) for q, ms in times.items() for p in (50, 95)} | {
        "device": str(lab.device), "bake_vs_every_pixel_psnr": psnr(float(np.mean(mse))),
        "bake_vs_every_pixel_labels": float(np.mean(agree)), "motion_vs_bake_psnr": psnr(float(np.mean(motion_mse))),
        "motion_vs_bake_labels": float(np.mean(motion_agree))}
    for name, rows in vs_ref.items():
        if rows:
            out[f"{name}_vs_reference_psnr"] = psnr(float(np.mean([m for m, _ in rows])))
            out[f"{name}_vs_reference_labels"] = float(np.mean([a for _, a in rows]))
    return out


def evaluate(scene: str = "room", queries: str | None = None, weights: str | None = None,
             progress=None, device: str = "cpu") -> dict:
    from ..scene.lab import SceneLab
    from ..scene.metrics import evaluate_views
    from ..scene.planner import Robot

    query_sets = scene_queries(scene, queries)
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
    sets, lat = [], []
    for qfile, qs in query_sets:
        rows = []
        for q in qs:
            r = lab.query(q["query"], frame)
            lat.append(r.latency_ms)
            ok, checked = answer_correct(q, r)
            rows.append({"query": q["query"], "category": q["category"], "expected": q["expected"],
                         "expected_candidates": q.get("candidates"), "answer": r.label,
                         "candidates": [c.label for c in r.candidates], "correct": ok, "set_checked": checked,
                         "corrected": r.corrected, "notes": r.notes, "ms": r.latency_ms})
        sets.append({"file": str(qfile), "name": qfile.name, "n": len(rows), "accuracy": _mean(rows),
                     "by_category": {c: {"n": len(g), "accuracy": _mean(g)} for c, g in _groups(rows).items()},
                     "rows": rows})
    every = [r for s_ in sets for r in s_["rows"]]
    report["queries"] = {"n": len(every), "accuracy": _mean(every), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                         "sets": sets}

    step("planning")
    plans, plat = [], []
    for robot in (Robot("ground", 0.12), Robot("gripper", 0.05), Robot("ground", 0.2)):
        for target in plan_targets(lab.spec):
            r = lab.plan(target, robot)
            row = {"robot": robot.kind, "radius": robot.radius, "target": target, "status": r.status,
                   "length": r.length, "min_clearance": r.min_clearance, "ms": r.planning_ms,
                   "goal": None if r.goal is None else list(r.goal[:2] if robot.kind == "ground" else r.goal),
                   "approach_distance": r.approach_distance, "approach": r.approach, "message": r.message}
            if r.solved:
                plat.append(r.planning_ms)
                gt = path_clearance(lab.spec, r)
                row.update(gt_clearance=gt - robot.radius, collision_free=bool(gt >= robot.radius))
                if lab.spec.layout.rooms and robot.kind == "ground":
                    row.update(rooms_crossed(lab.spec, r.path))
            plans.append(row)
    solved = [p for p in plans if p["status"] == "solved"]
    between = [p for p in solved if len(p.get("rooms", [])) > 1]
    report["planning"] = {"n": len(plans), "solved": len(solved),
                          "unreachable": sum(p["status"] != "solved" for p in plans),
                          "collision_free": float(np.mean([p["collision_free"] for p in solved])) if solved else float("nan"),
                          "p50_ms": pct(plat, 50), "p95_ms": pct(plat, 95), "rows": plans,
                          "between_rooms": len(between),
                          "through_doorways": float(np.mean([p["through_doorways"] for p in between])) if between else None}
    report["targets"] = TARGETS
    return report


def summary_rows(rep: dict) -> list[tuple[str, str, str]]:
    from ..scene.planner import REACH

    v, b, q, p, r = rep["views_full"], rep["views_bake"], rep["queries"], rep["planning"], rep["render"]
    t = rep["targets"]
    return [
        ("PSNR held-out (full), dB", f"{v['psnr']:.2f} (min {v['psnr_min']:.2f})", f">= {t['psnr']}"),
        ("SSIM held-out (full)", f"{v['ssim']:.4f}", ""),
        ("semantic mIoU (full)", f"{v['miou']:.4f}", f">= {t['miou']}"),
        ("PSNR / mIoU (bake)", f"{b['psnr']:.2f} / {b['miou']:.4f}", ""),
        *((f"queries {s['name']}", f"{s['accuracy'] * 100:.1f}% of {s['n']}", f">= {t['query_accuracy'] * 100:.0f}%")
          for s in q["sets"]),
        ("queries, all sets", f"{q['accuracy'] * 100:.1f}% of {q['n']}", ""),
        ("query latency p50 / p95, ms", f"{q['p50_ms']:.1f} / {q['p95_ms']:.1f}", f"<= {t['query_p95_ms']:.0f}"),
        ("paths solved / planned", f"{p['solved']} / {p['n']}", ""),
        ("solved paths collision-free", f"{p['collision_free'] * 100:.0f}%", "100%"),
        *((("ground paths between rooms, through a doorway", f"{p['between_rooms']}, "
            f"{p['through_doorways'] * 100:.0f}%", "100%"),) if p.get("between_rooms") else ()),
        ("approach distance max (ground / gripper), m",
         " / ".join(f"{_max_approach(p['rows'], k):.2f}" for k in ("ground", "gripper")),
         f"<= {REACH['ground']} / radius + {REACH['gripper']} + margin"),
        ("plan latency p50 / p95, ms", f"{p['p50_ms']:.1f} / {p['p95_ms']:.1f}", f"<= {t['plan_p95_ms']:.0f}"),
        ("bake render 256x256 p50 / p95, ms", f"{r['bake_256_p50_ms']:.1f} / {r['bake_256_p95_ms']:.1f}", f"<= {t['bake_render_p95_ms']:.0f}"),
        ("motion render 256x256 p50 / p95, ms", f"{r['motion_256_p50_ms']:.1f} / {r['motion_256_p95_ms']:.1f}", ""),
        ("motion frame vs bake frame", f"{r['motion_vs_bake_psnr']:.1f} dB, labels "
                                       f"{r['motion_vs_bake_labels'] * 100:.2f}%", ""),
        ("bake frame vs every-pixel frame", f"{r['bake_vs_every_pixel_psnr']:.1f} dB, labels "
                                            f"{r['bake_vs_every_pixel_labels'] * 100:.2f}%", ""),
        *((("bake / every-pixel frame vs 1/8-voxel reference",
            f"{r['bake_vs_reference_psnr']:.1f} / {r['every_pixel_vs_reference_psnr']:.1f} dB, labels "
            f"{r['bake_vs_reference_labels'] * 100:.2f} / {r['every_pixel_vs_reference_labels'] * 100:.2f}%", ""),)
          if "bake_vs_reference_psnr" in r else ()),
        ("full render 256x256, ms", f"{r['full_256_ms']:.0f}", ""),
    ]
