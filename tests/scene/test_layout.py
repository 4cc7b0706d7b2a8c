"""The apartment's spec and the layout sections (rooms, doorways, planning) under the loader
discipline: every bad value is one InputFileError `path: field: problem`."""

import json

import numpy as np
import pytest

from tinyserve_core.errors import InputFileError
from tinyserve_core.eval.scene import plan_targets, rooms_crossed
from tinyserve_core.scene.spec import available_scenes, load_scene


def _apartment() -> dict:
    with open(load_scene("apartment").path) as f:
        return json.load(f)


def _fails(tmp_path, d, field, problem):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InputFileError) as e:
        load_scene(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert problem in msg and "\n" not in msg


def test_the_apartment_has_two_rooms_a_doorway_and_rich_objects():
    assert {"room", "apartment"} <= set(available_scenes())
    s = load_scene("apartment")
    things = [o for o in s.objects if not o.structure]
    assert len(things) >= 25
    assert [r.name for r in s.layout.rooms] == ["living room", "kitchen"]
    (door,) = s.layout.doorways
    assert set(door.rooms) == {"living room", "kitchen"}
    # objects in both rooms, each described as the query pipeline needs
    rooms = {s.layout.room_at(*np.mean(o.bounds(), axis=0)[:2]) for o in things}
    assert rooms == {"living room", "kitchen"}
    assert all(o.aliases and o.function and o.colors and o.materials for o in things)
    # the eval's ground robot starts in the living room and plans into the kitchen
    assert s.layout.room_at(*s.layout.starts["ground"][:2]) == "living room"
    assert {s.layout.room_at(*np.mean(s.object(t).bounds(), axis=0)[:2]) for t in plan_targets(s)} == rooms


def test_room_plan_targets_are_the_spec_s():
    assert plan_targets(load_scene("room"))[:2] == ["red mug", "stack of books"]


def _move_door(d, lo, hi):
    d["doorways"][0]["min"], d["doorways"][0]["max"] = lo, hi


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda d: d.__setitem__("room", []), "room", "unknown key"),
    (lambda d: d["objects"][3].__setitem__("colours", ["red"]), "objects[3].colours", "unknown key"),
    (lambda d: d["rooms"][0].__setitem__("max", [0.0, 9.0]), "rooms[0]", "outside the scene's bounds"),
    (lambda d: d["rooms"][0].__setitem__("max", [0.5, 1.5]), "rooms[1]", "overlaps room 'living room'"),
    (lambda d: d["rooms"][1].__setitem__("min", [0.0, 1.5, 0.0]), "rooms[1].min", "2 numbers"),
    (lambda d: d["rooms"][1].__setitem__("name", "Living Room"), "rooms[1].name", "already used"),
    (lambda d: d["rooms"][1].__setitem__("wall", 1), "rooms[1].wall", "unknown key"),
    (lambda d: d["doorways"][0].__setitem__("rooms", ["living room", "bathroom"]), "doorways[0].rooms", "not a room"),
    (lambda d: d["doorways"][0].__setitem__("rooms", ["kitchen", "kitchen"]), "doorways[0].rooms", "to itself"),
    (lambda d: _move_door(d, [-0.05, 0.1], [0.05, "wide"]), "doorways[0].max[1]", "expected a number"),
    (lambda d: _move_door(d, [-0.05, 0.1], [0.05, 1e9]), "doorways[0].max[1]", "out of range"),
    (lambda d: _move_door(d, [-1.0, 0.1], [-0.8, 0.9]), "doorways[0]", "does not touch room 'kitchen'"),
    (lambda d: _move_door(d, [-0.05, -0.5], [0.05, 0.3]), "doorways[0]", "blocked by 'walls'"),
    (lambda d: d["planning"].__setitem__("targets", ["fridge", "unicorn"]), "planning.targets[1]", "not an object label"),
    (lambda d: d["planning"].__setitem__("targets", ["floor"]), "planning.targets[0]", "not an object label"),
    (lambda d: d["planning"]["starts"].__setitem__("ground", [0.0]), "planning.starts.ground", "x, y or x, y, yaw"),
    (lambda d: d["planning"]["starts"].__setitem__("gripper", [0.0, 0.0, 9.0]), "planning.starts.gripper[2]", "out of range"),
    (lambda d: d["planning"]["starts"].__setitem__("drone", [0.0, 0.0, 1.0]), "planning.starts.drone", "unknown key"),
])
def test_bad_layouts_name_the_field(tmp_path, mutate, field, problem):
    d = _apartment()
    mutate(d)
    _fails(tmp_path, d, field, problem)


def test_a_chair_in_the_doorway_blocks_it(tmp_path):
    d = _apartment()
    chair = next(o for o in d["objects"] if o["label"] == "blue chair")
    chair["primitives"][0]["center"] = [0.0, 0.5, 0.44]  # the seat moved into the doorway
    _fails(tmp_path, d, "doorways[0]", "blocked by 'blue chair'")


def test_layout_is_optional():
    s = load_scene("room")
    assert s.layout.rooms == () and s.layout.doorways == () and s.layout.room_at(0, 0) == ""


def test_rooms_crossed_checks_every_change_of_room_is_in_a_doorway():
    s = load_scene("apartment")
    through = np.array([(-0.5, 0.5 + 0.0 * x, 0.0) for x in range(2)] + [(x, 0.5, 0.0) for x in np.arange(-0.4, 0.6, 0.02)])
    assert rooms_crossed(s, through) == {"rooms": ["living room", "kitchen"], "through_doorways": True}
    # the same crossing 1 m south goes through the partition wall: the check must say so
    wall = through - np.array([0.0, 1.0, 0.0])
    assert rooms_crossed(s, wall) == {"rooms": ["living room", "kitchen"], "through_doorways": False}
    assert rooms_crossed(s, through[:5])["rooms"] == ["living room"]
