"""The render view's orbit camera and the output colouring (no Qt, no scene)."""

from __future__ import annotations

import numpy as np
import pytest

from app.scene.colorize import OUTPUTS, colorize, label_palette, relevancy_overlay
from app.scene.orbit import MAX_ELEVATION, Orbit


def test_looking_from_recovers_the_orbit():
    o = Orbit((0.2, -0.1, 0.4), azimuth=123.0, elevation=35.0, distance=2.5)
    back = Orbit.looking_from(o.eye(), o.target)
    assert back.azimuth == pytest.approx(o.azimuth) and back.elevation == pytest.approx(o.elevation)
    assert back.distance == pytest.approx(o.distance)
    assert np.allclose(back.c2w(), o.c2w())


def test_orbit_drag_turns_and_clamps_elevation():
    o = Orbit((0, 0, 0), 10.0, 40.0, 3.0)
    turned = o.orbited(50, 0)
    assert turned.azimuth != o.azimuth and turned.elevation == o.elevation and turned.distance == o.distance
    assert o.orbited(0, 10_000).elevation == MAX_ELEVATION


def test_pan_moves_the_target_in_the_image_plane():
    o = Orbit((0, 0, 0), 30.0, 40.0, 3.0)
    p = o.panned(20, -10, 256)
    shift = np.asarray(p.target) - np.asarray(o.target)
    view_dir = np.asarray(o.target) - o.eye()
    assert np.linalg.norm(shift) > 0 and abs(shift @ view_dir) < 1e-9
    # the eye moves with the target: the view direction is unchanged
    assert np.allclose(p.eye() - np.asarray(p.target), o.eye() - np.asarray(o.target))


def test_zoom_moves_closer_within_limits():
    o = Orbit((0, 0, 0), distance=3.0)
    assert o.zoomed(1).distance == pytest.approx(2.7)
    assert o.zoomed(100).distance == o.min_distance and o.zoomed(-100).distance == o.max_distance


class _Frame:
    def __init__(self, h=8, w=8, k=4, seed=0):
        rng = np.random.default_rng(seed)
        self.rgb = rng.random((h, w, 3)).astype(np.float32)
        self.depth = rng.random((h, w)).astype(np.float32) + 1
        self.acc = np.ones((h, w), np.float32)
        self.acc[0, 0] = 0
        p = rng.random((h, w, k)).astype(np.float32)
        self.probs = p / p.sum(-1, keepdims=True)

    @property
    def label(self):
        return self.probs.argmax(-1)

    @property
    def entropy(self):
        return -(self.probs * np.log(self.probs)).sum(-1)


def test_every_output_is_an_rgb8_image():
    f = _Frame()
    for name in OUTPUTS:
        img = colorize(f, name, np.zeros((8, 8), np.float32))
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert (colorize(f, "Depth")[0, 0] == 255).all()  # nothing hit: white
    assert np.array_equal(colorize(f, "Semantic labels"), label_palette(4)[f.label])
    with pytest.raises(ValueError, match="output"):
        colorize(f, "Normals")


def test_relevancy_tints_only_relevant_pixels():
    rgb = np.full((2, 2, 3), 0.5, np.float32)
    rel = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    img = relevancy_overlay(rgb, rel).astype(int)
    assert img[0, 0, 0] > 200 and img[0, 0, 2] < 30  # hot
    assert img[1, 1, 0] == img[1, 1, 1] == img[1, 1, 2]  # grey
    assert len({tuple(c) for c in label_palette(14)}) == 14
    # the apartment's 28 labels and background: past the 20 categorical colours none repeats
    assert len({tuple(c) for c in label_palette(29)}) == 29 and tuple(label_palette(29)[0]) == (255, 255, 255)
    assert np.array_equal(label_palette(29)[:14], label_palette(14))
