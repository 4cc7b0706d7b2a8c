"""The narrowest passage of the widest route, on a synthetic two-room map."""

import numpy as np
from scipy import ndimage

from tinyserve_core.scene.passages import bottleneck


def _clearance(obstacles: np.ndarray, voxel: float) -> np.ndarray:
    return ndimage.distance_transform_edt(~obstacles, sampling=voxel)


def test_a_narrow_door_is_the_bottleneck_and_is_located():
    voxel = 0.05
    occ = np.zeros((81, 41), dtype=bool)
    occ[[0, -1], :] = occ[:, [0, -1]] = True
    occ[40, :] = True  # a wall across the middle ...
    occ[40, 18:23] = False  # ... with a door 5 cells (0.25 m) wide
    c = _clearance(occ, voxel)
    goal = np.zeros_like(occ)
    goal[70:75, 15:25] = True
    p = bottleneck(c, (10, 20), goal, need=0.3, lo=np.zeros(2), voxel=voxel)
    assert 0.2 <= p.width <= 0.35 and p.required == 0.6
    assert p.at is not None and abs(p.at[0] - 40 * voxel) <= 2 * voxel and abs(p.at[1] - 20 * voxel) <= 2 * voxel
    assert "0.60 m" in p.describe("goal") and "wide" in p.describe("goal")


def test_a_walled_off_goal_has_no_passage():
    voxel = 0.05
    occ = np.zeros((40, 40), dtype=bool)
    occ[20, :] = True
    goal = np.zeros_like(occ)
    goal[30, 20] = True
    p = bottleneck(_clearance(occ, voxel), (5, 5), goal, need=0.1, lo=np.zeros(2), voxel=voxel)
    assert p.width == 0 and p.at is None and "walled off" in p.describe("x")
