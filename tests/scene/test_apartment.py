"""The second scene on its shipped weights: held-out quality, its query set, rooms read
from queries, and a ground robot planning from the living room through the doorway to
objects in the kitchen (checked against the exact geometry, like the room's paths)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from tinyserve_core.eval.scene import answer_correct, default_queries, load_queries, path_clearance, rooms_crossed
from tinyserve_core.scene.geometry import footprint_distance
from tinyserve_core.scene.planner import FLOOR_GAP, REACH, Robot


@pytest.fixture(scope="module")
def flat():
    from tinyserve_core.scene.lab import SceneLab

    return SceneLab("apartment")


# The shipped weights (256 px training views, 2 cm voxels, 2,000 steps on an H200 in
# 27.7 s) reach 30.42 dB held-out in this renderer (30.40 in train-scene's): the target.
SHIPPED_PSNR_FLOOR = 30.0


def test_heldout_views_meet_the_targets(flat):
    from tinyserve_core.scene.metrics import evaluate_views

    full = evaluate_views(flat.spec, lambda c: flat.render(c, "full"))
    assert full["psnr"] >= SHIPPED_PSNR_FLOOR and full["miou"] >= 0.9, (full["psnr"], full["miou"])


def test_query_set_meets_the_threshold_in_every_category(flat):
    qs = load_queries(default_queries("apartment"), flat.labels[1:])
    assert len(qs) >= 60
    by = defaultdict(list)
    for q in qs:
        by[q["category"]].append(answer_correct(q, flat.query(q["query"]))[0])
    assert set(by) == {"paraphrase", "synonym", "function", "attribute", "position", "typo", "absent", "ambiguous"}
    assert np.mean([ok for v in by.values() for ok in v]) >= 0.9
    assert all(np.mean(v) >= 0.75 for v in by.values()), {c: np.mean(v) for c, v in by.items()}


@pytest.mark.parametrize("text, status, labels", [
    ("the chair in the kitchen", "ambiguous", ["blue chair", "wooden chair"]),
    ("the chair in the living room", "found", ["armchair"]),
    ("the plant in the kitchen", "not found", []),  # the plant is in the living room
    ("the chiar in the kitchn", "ambiguous", ["blue chair", "wooden chair"]),
    ("the kitchen counter", "found", ["kitchen counter"]),  # a room's name inside a label is no room phrase
    ("the biggest thing in the lounge", "found", ["sofa"]),  # a room's alias
])
def test_rooms_named_in_a_query_filter_the_answer(flat, text, status, labels):
    r = flat.query(text)
    assert r.status == status and sorted(c.label for c in r.candidates) == labels, (r.status, r.candidates, r.notes)


def _outside(spec, label: str, xy, radius: float) -> bool:
    """The robot's disc at xy clears every part of the object between the floor gap and its height."""
    pts = torch.tensor([xy], dtype=torch.float64)
    d = min(float(footprint_distance(p, pts, FLOOR_GAP, 2.0)[0]) for p in spec.object(label).primitives)
    return d >= radius


@pytest.mark.parametrize("target, support", [("fridge", None), ("red kettle", "kitchen counter"),
                                             ("cooking pot", "stove"), ("fruit bowl", "dining table")])
def test_ground_robot_plans_through_the_doorway(flat, target, support):
    spec, robot = flat.spec, Robot("ground", 0.12)
    r = flat.plan(target, robot)
    assert r.solved, r.message
    assert spec.layout.room_at(*r.start[:2]) == "living room"
    crossed = rooms_crossed(spec, r.path)
    assert crossed == {"rooms": ["living room", "kitchen"], "through_doorways": True}
    assert path_clearance(spec, r) >= robot.radius  # exact geometry, not the bake
    gx, gy, yaw = r.goal
    # the approach pose: outside the target's footprint and its support's, within reach, facing it
    for label in [target] + ([support] if support else []):
        assert _outside(spec, label, (gx, gy), robot.radius), label
    lo, hi = (np.array(b[:2]) for b in spec.object(target).bounds())
    reach = np.linalg.norm(np.maximum(np.maximum(lo - (gx, gy), np.array((gx, gy)) - hi), 0))
    assert reach <= REACH["ground"] + 0.05 and abs(r.approach_distance - reach) < 0.06
    centre = (lo + hi) / 2
    assert abs(np.angle(np.exp(1j * (math.atan2(centre[1] - gy, centre[0] - gx) - yaw)))) < 0.3


def test_supports_are_what_an_object_rests_on(flat):
    """The bake's labels bleed into a thin tabletop's hidden inside and walls rise beside
    cookers: neither may hide the table under the fruit bowl or make a wall a support."""
    sup = {t: flat.planner.supports(t) for t in ("fruit bowl", "yellow cushion", "cooking pot", "red kettle",
                                                  "television", "stove", "fridge", "sofa", "walls")}
    assert sup == {"fruit bowl": ["dining table"], "yellow cushion": ["sofa"], "cooking pot": ["stove"],
                   "red kettle": ["kitchen counter"], "television": ["tv stand"], "stove": [], "fridge": [],
                   "sofa": [], "walls": []}
