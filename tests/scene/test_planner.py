import math

import numpy as np
import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.eval.scene import path_clearance
from tinyserve_core.scene.planner import REACH, Robot


@pytest.mark.parametrize("robot, target", [(Robot("ground", 0.12), "stack of books"),
                                           (Robot("ground", 0.12), "green ball"),
                                           (Robot("gripper", 0.05), "red mug")])
def test_paths_are_collision_free_against_the_true_geometry(lab, spec, robot, target):
    r = lab.plan(target, robot)
    assert r.solved, r.message
    assert path_clearance(spec, r) >= robot.radius
    assert r.min_clearance >= 0 and r.length > 0 and r.planning_ms > 0
    assert np.allclose(r.path[0][:2], r.start[:2])
    # the approach pose lies beside the object: within reach of its true shape
    lo, hi = (np.array(b) for b in spec.object(target).bounds())
    gap = np.maximum(np.maximum(lo - r.path[-1], r.path[-1] - hi), 0)[: 2 if robot.kind == "ground" else 3]
    assert np.linalg.norm(gap) < robot.radius + 0.6


def test_unreachable_goal_is_reported_not_faked(lab):
    r = lab.plan("blue box", Robot("ground", 0.2))
    assert r.status == "unreachable" and len(r.path) == 0 and "blue box" in r.message
    # the reason names the passage narrower than the robot
    assert r.passage is not None and 0 < r.passage.width < r.passage.required
    assert r.passage.at is not None and "passage at" in r.message and "wide" in r.message


@pytest.mark.parametrize("target", ["red mug", "stack of books", "desk lamp"])
def test_ground_goal_is_beside_the_support_within_reach(lab, spec, target):
    robot = Robot("ground", 0.12)
    r = lab.plan(target, robot)
    assert r.solved, r.message
    gx, gy, yaw = r.goal
    # the robot's disc lies outside the tabletop's outline, not under it
    top = spec.object("table").primitives[0]
    lo, hi = np.array(top.bounds()[0][:2]), np.array(top.bounds()[1][:2])
    outside = np.maximum(np.maximum(lo - (gx, gy), np.array((gx, gy)) - hi), 0)
    assert np.linalg.norm(outside) >= robot.radius
    # within reach of the object's true shape, and facing it
    olo, ohi = (np.array(b[:2]) for b in spec.object(target).bounds())
    reach = np.linalg.norm(np.maximum(np.maximum(olo - (gx, gy), np.array((gx, gy)) - ohi), 0))
    assert reach <= REACH["ground"] + 0.05 and abs(r.approach_distance - reach) < 0.06
    centre = (olo + ohi) / 2
    assert abs(np.angle(np.exp(1j * (math.atan2(centre[1] - gy, centre[0] - gx) - yaw)))) < 0.3
    assert r.to_dict()["approach_distance"] == r.approach_distance


def test_gripper_goal_approaches_from_above_or_the_side(lab, spec):
    r = lab.plan("red mug", Robot("gripper", 0.05))
    assert r.solved and r.approach in ("above", "side")
    assert r.goal[2] >= spec.object("red mug").bounds()[1][2] - 0.05
    assert r.approach_distance <= lab.planner.reach(r.robot) <= 0.05 + 2 * lab.planner.voxel + REACH["gripper"]


def test_planning_to_an_ambiguous_query_says_which_it_took(lab):
    q = lab.query("a cardboard box")
    r = lab.plan(q, Robot("ground", 0.12))
    assert r.solved and r.target in ("blue box", "brown box")
    assert "ambiguous" in r.note and r.target in r.note
    assert lab.plan(lab.query("the red mug")).note == ""


def test_planning_to_nothing_found_is_an_error_not_an_index_error(lab):
    with pytest.raises(ConfigError) as e:
        lab.plan(lab.query("a giraffe"))
    assert e.value.field == "target"


def test_start_inside_an_obstacle_is_invalid(lab, spec):
    leg = spec.object("table").primitives[1].base
    r = lab.plan("red mug", Robot("ground", 0.12), start=(leg[0], leg[1], 0.0))
    assert r.status == "invalid start" and len(r.path) == 0


def test_bad_inputs_name_the_field(lab):
    with pytest.raises(ConfigError) as e:
        Robot("ground", 5.0)
    assert e.value.field == "radius"
    with pytest.raises(ConfigError) as e:
        Robot("hovercraft", 0.1)
    assert e.value.field == "robot"
    with pytest.raises(ConfigError) as e:
        lab.plan("red mug", planner="astar")
    assert e.value.field == "planner"
    with pytest.raises(ConfigError) as e:
        lab.plan("unicorn")
    assert e.value.field == "target"


def test_floor_specks_in_the_bake_are_not_obstacles(lab, spec):
    """The bake holds a few floor-labelled solid corners at 5 cm; as obstacles they closed
    the corridor north of the table to a 0.2 m robot."""
    blocked, lo, voxel = lab.planner.inflated(Robot("ground", 0.2))
    x, y = np.rint((np.array([0.0, 1.025]) - lo) / voxel).astype(int)
    assert not blocked[x, y]
    r = lab.plan("stack of books", Robot("ground", 0.2))
    assert r.solved and path_clearance(spec, r) >= 0.2
