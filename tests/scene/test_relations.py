"""Spatial relations and attributes from the spec's geometry."""

import numpy as np
import pytest

from tinyserve_core.scene.relations import (extreme, facts_of, filter_relation, lies_under, rests_on,
                                            scene_facts, side)
from tinyserve_core.scene.spec import load_scene, parse_scene


@pytest.fixture(scope="module")
def room():
    spec = load_scene("room")
    facts = scene_facts(spec)
    return spec, facts, {f.label: k for k, f in enumerate(facts)}


def test_resting_on_a_support(room):
    _, f, i = room
    assert rests_on(f[i["red mug"]], f[i["table"]]) and rests_on(f[i["table"]], f[i["floor"]])
    assert not rests_on(f[i["red mug"]], f[i["floor"]]) and not rests_on(f[i["chair"]], f[i["table"]])
    assert not lies_under(f[i["chair"]], f[i["table"]])


def test_on_excludes_the_reference_and_structure(room):
    _, f, i = room
    on_floor = filter_relation("on", list(range(len(f))), [i["floor"]], f, None)
    assert i["floor"] not in on_floor and i["walls"] not in on_floor
    assert i["green ball"] in on_floor and i["red mug"] not in on_floor
    on_table = filter_relation("on", list(range(len(f))), [i["table"]], f, None)
    assert sorted(f[k].label for k in on_table) == ["desk lamp", "red mug", "stack of books"]


def test_next_to_means_beside_not_on(room):
    _, f, i = room
    near = filter_relation("near", list(range(len(f))), [i["table"]], f, None)
    assert [f[k].label for k in near] == ["chair"]


def test_left_and_right_follow_the_camera(room):
    _, f, i = room
    boxes = [i["blue box"], i["brown box"]]
    assert side(boxes, f, "left", None) == [i["blue box"]]
    # seen from the opposite side of the room, left and right swap
    c2w = np.eye(4)
    az = np.radians(210.0)
    c2w[:2, 0] = [-np.sin(az), np.cos(az)]
    c2w[:2, 2] = [np.cos(az), np.sin(az)]
    assert side(boxes, f, "left", c2w) == [i["brown box"]]


def test_superlatives_measure_the_geometry(room):
    _, f, i = room
    boxes = [i["blue box"], i["brown box"]]
    assert extreme(boxes, f, "volume", 1) == [i["blue box"]] and extreme(boxes, f, "volume", -1) == [i["brown box"]]


def test_colour_is_named_from_rgb_when_the_spec_gives_none():
    spec = parse_scene({"bounds": {"min": [-1, -1, -1], "max": [1, 1, 1]}, "objects": [
        {"label": "floor", "description": "a floor", "primitives": [
            {"type": "box", "center": [0, 0, -0.5], "size": [2, 2, 0.1], "color": [0.5, 0.5, 0.5]}]},
        {"label": "thing", "description": "a thing", "primitives": [
            {"type": "sphere", "center": [0, 0, 0], "radius": 0.1, "color": [0.9, 0.1, 0.1]}]}]})
    f = facts_of(spec.object("thing"))
    assert f.colours == {"red"} and f.size == "small" and not f.structure
    assert spec.object("floor").structure  # the floor is structure even when the file does not say so
