"""`bench scene-gui` plans to objects its scene has: a target the scene lacks would leave
the plan panel's previous target in place and time a plan to that instead."""

from __future__ import annotations

import dataclasses

import pytest

from app.bench.scene_gui import PLANS, scene_plans
from tinyserve_core.scene.spec import load_scene


@pytest.mark.parametrize("name", sorted(PLANS))
def test_each_shipped_scene_plans_to_its_own_objects(name):
    spec = load_scene(name)
    plans = scene_plans(spec)
    assert {t for t, _, _ in plans} <= set(spec.labels)
    assert {r for _, r, _ in plans} == {"ground", "gripper"}


def test_another_scene_plans_to_its_first_objects():
    spec = dataclasses.replace(load_scene("room"), name="my office")
    objs = [o.label for o in spec.objects if not o.structure]
    assert scene_plans(spec) == tuple((t, "ground", 0.12) for t in objs[:3]) + tuple(
        (t, "gripper", 0.05) for t in objs[:2])
