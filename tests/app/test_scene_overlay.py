"""The path overlay respects occlusion: points behind a nearer rendered surface are hidden."""

import numpy as np

from app.scene.overlay import visible_points
from tinyserve_core.scene.camera import orbit_camera


def test_points_behind_a_nearer_surface_are_hidden():
    cam = orbit_camera((0, 0, 0), 30, 40, 3.0, 64, 64)
    pts = np.array([[0.0, 0.0, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.05, 0.0]])
    dist = np.linalg.norm(pts - cam.position, axis=1)
    depth = np.full((64, 64), 10.0, dtype=np.float32)  # nothing in front: all shown
    uv, shown = visible_points(cam, depth, pts)
    assert shown.all() and np.allclose(uv, cam.project(pts)[0])
    depth[:] = dist.min() - 0.5  # a tabletop between the camera and the floor path
    assert not visible_points(cam, depth, pts)[1].any()
    depth[:] = dist.max() + 0.01  # the floor itself, where the path lies: shown
    assert visible_points(cam, depth, pts)[1].all()


def test_points_outside_the_frame_keep_their_front_flag():
    cam = orbit_camera((0, 0, 0), 30, 40, 3.0, 32, 32)
    far_side = np.array([[5.0, -5.0, 0.0]])  # projects outside the 32 px frame
    uv, shown = visible_points(cam, np.zeros((32, 32), dtype=np.float32), far_side)
    assert shown[0] == cam.project(far_side)[1][0]
