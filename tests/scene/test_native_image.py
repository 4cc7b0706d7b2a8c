"""The whole CPU bake frame in one compiled call (scene/native_image.py, csrc/scene_cpu.cpp):
its splat is the torch splat's (StartSplat.starts) and its adaptive refinement makes the
choices of `adaptive.render_pixels` over the same compiled casts, so the frame is the
frame `frames.render_frame` draws with them.

Tolerances, measured on the shipped room: the starts agree to 1 float32 ulp (the torch
splat's matrix product and sums round differently), which moves a ray's first sample by
under 1e-6 m; the frames then agree to ~1e-4 (a few 1e-3 at a rare grazing pixel) and the
refinement casts the same pixels."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from tinyserve_core.scene import adaptive, native_image
from tinyserve_core.scene.camera import Camera, look_at, orbit_camera
from tinyserve_core.scene.frames import render_frame

START_ATOL_M = 1e-5
MAX_VALUE_DIFF = 0.01  # any output channel, any pixel
MEAN_VALUE_DIFF = 1e-5


@pytest.fixture(scope="module")
def image(lab):
    return lab.bake.compiled_image() or pytest.skip("no C++ compiler here: the torch frames run")


def _same_starts(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    fin = torch.isfinite(a)
    assert bool(fin.any())  # some cell is seen
    assert float((a[fin] - b[fin]).abs().max()) <= START_ATOL_M


POSES = [(20.0, 40.0, None, 96, 96), (200.0, 65.0, 2.2, 81, 57), (305.0, 25.0, 2.6, 64, 72),
         (120.0, 20.0, 1.0, 72, 72), (10.0, 5.0, 1.3, 48, 80), (75.0, 35.0, None, 256, 256)]


@pytest.mark.parametrize("az,elev,dist,w,h", POSES)
def test_the_compiled_splat_is_the_torch_splat(lab, image, az, elev, dist, w, h):
    """Orbit poses, odd sizes, and eyes inside the room near furniture (cells whose boxes
    span many blocks: the torch splat's general path)."""
    cam = orbit_camera(lab.spec.camera_target, az, elev, dist or lab.spec.camera_distance, w, h)
    ref = lab.bake.splat.starts(cam)
    assert ref is not None
    _same_starts(image.starts(cam), ref)


def test_the_compiled_splat_falls_back_where_the_torch_one_does(lab, image):
    bake = lab.bake
    # the eye in an occupied cell
    centre = bake.splat.centres[:, 0].double().numpy()
    cam = Camera(look_at(centre, centre + np.array([1.0, 0.3, 0.2])), 32, 32)
    assert bake.splat.starts(cam) is None and image.starts(cam) is None
    # the eye just outside a surface cell's open -x face, looking along the face: the cell
    # straddles the camera's plane within the view
    k = int(torch.nonzero(bake.splat.faces[0])[0])
    c = bake.splat.centres[:, k].double().numpy()
    eye = c - np.array([0.8 * bake.grid.voxel, 0.0, 0.0])
    cam = Camera(look_at(eye, eye + np.array([0.0, 1.0, 0.05])), 32, 32)
    assert bake.splat.starts(cam) is None and image.starts(cam) is None
    assert image.render(cam, bake.grid.voxel / 2, bake.background) is None
    assert bake.render(cam).rgb.shape == (32, 32, 3)  # the traced frame instead


@pytest.mark.parametrize("az,elev,dist,w,h", POSES[:5])
@pytest.mark.parametrize("coarse", [False, True])
def test_the_one_call_frame_is_the_adaptive_frame(lab, image, az, elev, dist, w, h, coarse):
    bake = lab.bake
    cam = orbit_camera(lab.spec.camera_target, az, elev, dist or lab.spec.camera_distance, w, h)
    step = bake.grid.voxel if coarse else bake.grid.voxel / 2
    ref_cast = []
    native = bake.compiled()

    class Counting:  # the torch refinement over the same compiled casts, counted
        device = native.device

        def render(self, cam, start, idx, *a, **k):
            ref_cast.append(w * h if idx is None else idx.numel())
            return native.render(cam, start, idx, *a, **k)

    ref = render_frame(bake.cells, bake.splat, bake.space, cam, step, bake.background, bake.device, levels=1,
                       colour_edges=not coarse, native=Counting())
    out = image.render(cam, step, bake.background, levels=1, colour_edges=not coarse)
    for key in ref:
        diff = (out[key] - ref[key]).abs()
        assert out[key].shape == ref[key].shape and bool(torch.isfinite(out[key]).all()), key
        assert float(diff.max()) <= MAX_VALUE_DIFF and float(diff.mean()) <= MEAN_VALUE_DIFF, key
    assert float((out["probs"].argmax(1) == ref["probs"].argmax(1)).float().mean()) >= 0.9995
    # the same choices: as many rays cast (to a handful, where a start moved by an ulp
    # tips a neighbour test)
    assert abs(image.cast - sum(ref_cast)) <= max(2, sum(ref_cast) // 1000)
    assert image.cast < w * h  # and it does interpolate (more at 256 px: ~40% cast)


@pytest.mark.parametrize("levels", [0, 2])
def test_levels_as_the_torch_refinement(lab, image, levels):
    """No refinement casts every pixel; two levels refine from every fourth pixel, with the
    depth tolerance doubled at the coarser level."""
    bake = lab.bake
    cam = lab.camera(azimuth=140, size=96)
    step = bake.grid.voxel / 2
    ref = render_frame(bake.cells, bake.splat, bake.space, cam, step, bake.background, bake.device,
                       levels=levels, native=bake.compiled())
    out = image.render(cam, step, bake.background, levels=levels)
    for key in ref:
        assert float((out[key] - ref[key]).abs().mean()) <= MEAN_VALUE_DIFF, key
    if levels == 0:
        assert image.cast == 96 * 96


def test_a_small_frame_casts_every_pixel(lab, image):
    bake = lab.bake
    cam = lab.camera(azimuth=30, size=adaptive.MIN_SIDE - 1)
    out = image.render(cam, bake.grid.voxel / 2, bake.background)
    assert image.cast == cam.width * cam.height
    every = render_frame(bake.cells, bake.splat, bake.space, cam, bake.grid.voxel / 2, bake.background,
                         bake.device, levels=0, native=bake.compiled())
    assert float((out["rgb"] - every["rgb"]).abs().max()) <= MAX_VALUE_DIFF


def test_the_lab_draws_its_frames_in_one_call(lab, image, monkeypatch):
    calls = []
    render = image.render
    monkeypatch.setattr(image, "render", lambda *a, **k: calls.append(k) or render(*a, **k))
    monkeypatch.setattr(lab.bake.compiled(), "render", lambda *a, **k: pytest.fail("cast outside the one call"))
    cam = Camera(look_at(np.array([1.2, -1.0, 0.9]), np.array(lab.spec.camera_target)), 48, 40)
    frame = lab.render(cam, "bake")
    motion = lab.render(cam, "motion")
    assert [k["colour_edges"] for k in calls] == [True, False]
    assert frame.rgb.shape == (40, 48, 3) and motion.probs.shape == (40, 48, lab.bake.num_classes)
    assert set(np.unique(frame.label)) - {0}


def test_a_library_without_the_call_keeps_the_cast_path(lab):
    """The GPU library has only the per-ray cast: no one-call frame over it; a library
    whose structs disagree with the mirrors is an error, not a wrong frame."""
    class NoCall:
        pass

    assert not native_image._bind(NoCall())
    # frames on a GPU keep their every-pixel launch and torch splat
    from types import SimpleNamespace

    on_gpu = SimpleNamespace(device=torch.device("cuda", 0), lib=lab.bake.compiled().lib)
    assert native_image.native_image(on_gpu, lab.bake.splat) is None
    assert native_image.native_image(None, lab.bake.splat) is None

    class Mismatch:
        def __getattr__(self, name):
            return lambda: 1 if name.endswith("_size") else None

    with pytest.raises(RuntimeError, match="disagree"):
        native_image._bind(Mismatch())
    assert ctypes.sizeof(native_image.AdaptiveParams) == 24
