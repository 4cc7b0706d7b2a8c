import numpy as np
import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.eval.scene import path_clearance
from tinyserve_core.scene.planner import Robot


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
