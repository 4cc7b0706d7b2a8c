"""The fast bake frame (`scene.frames`): splatted start distances never pass an occupied
cell, the per-cell tables give the bake's own lookups, and the frame stays as close to
the finer reference frame as the every-pixel frame is."""

import copy
import math

import numpy as np
import pytest
import torch

from tinyserve_core.scene.adaptive import render_image
from tinyserve_core.scene.bake import as_result
from tinyserve_core.scene.camera import Camera, look_at, orbit_camera
from tinyserve_core.scene.frames import CLASSES_PER_CELL, frame_rays, render_frame
from tinyserve_core.scene.volume import ray_aabb


def _psnr(a, b) -> float:
    return -10 * math.log10(max(float(np.mean((a - b) ** 2)), 1e-12))


@pytest.mark.parametrize("az,elev,dist,w,h", [(20.0, 40.0, None, 64, 64), (200.0, 65.0, 2.2, 63, 47),
                                              (305.0, 25.0, 2.6, 48, 40), (120.0, 20.0, 1.0, 56, 56),
                                              (10.0, 5.0, 1.3, 40, 64)])
def test_starts_never_pass_an_occupied_cell(lab, first_occupied, az, elev, dist, w, h):
    """From orbit poses and from eyes inside the room, whose image plane cuts the walls
    and the floor out of view."""
    bake = lab.bake
    cam = orbit_camera(lab.spec.camera_target, az, elev, dist or lab.spec.camera_distance, w, h)
    start = bake.splat.starts(cam)
    assert start is not None and start.shape == (w * h,)
    o, d = cam.rays()
    near, far = ray_aabb(o, d, bake.grid.lo, bake.grid.hi)
    rays = torch.nonzero(far > near).squeeze(1)
    first = first_occupied(o, d, rays, near, far, torch.full_like(near[rays], math.inf))
    assert bool((start[rays] <= first + 1e-5).all())  # never past the first occupied cell
    hit = torch.isfinite(first)
    assert int(hit.sum()) > 0.3 * w * h
    # and close before it: the cell's bounding sphere and a 2-pixel block's spread (wider at
    # these small sizes than at 256 px)
    gap = (first[hit] - start[rays][hit]) / bake.grid.voxel
    assert float(gap.median()) < 3.0


def test_a_camera_among_the_surface_cells_falls_back_to_tracing(lab):
    """A surface cell straddling the camera's plane has no bounded projection: starts()
    says so and the frame is the traced adaptive frame of the renderer before."""
    bake = lab.bake
    centre = bake.splat.centres[:, 0].double().numpy()
    cam = Camera(look_at(centre, centre + np.array([1.0, 0.3, 0.2])), 32, 32)
    assert bake.splat.starts(cam) is None
    # an eye inside a solid, away from any surface cell, starts in an occupied cell
    occ = bake.occ
    inner = occ[1:-1, 1:-1, 1:-1] & occ[:-2, 1:-1, 1:-1] & occ[2:, 1:-1, 1:-1] & occ[1:-1, :-2, 1:-1] \
        & occ[1:-1, 2:, 1:-1] & occ[1:-1, 1:-1, :-2] & occ[1:-1, 1:-1, 2:]
    deep = torch.nonzero(inner)[0] + 1
    eye = np.array(bake.grid.lo) + (deep.numpy() + 0.5) * bake.grid.voxel
    assert bake.splat.starts(Camera(look_at(eye, eye + np.array([0.0, 1.0, 0.0])), 16, 16)) is None
    frame = bake.render(cam)
    traced = as_result(render_image(lambda o, d: bake.render_rays(o, d), cam, bake.device, bake.grid.voxel), cam)
    assert np.array_equal(frame.rgb, traced.rgb) and np.array_equal(frame.label, traced.label)


def test_cell_tables_give_the_bakes_own_lookups(lab):
    bake, table = lab.bake, lab.bake.cells
    occupied = torch.nonzero(bake.occ.reshape(-1)).squeeze(1)
    gen = torch.Generator().manual_seed(4)
    pick = occupied[torch.randint(0, occupied.numel(), (2000,), generator=gen)]
    _, cy, cz = bake.occ.shape
    cell = torch.stack([torch.div(pick, cy * cz, rounding_mode="floor"),
                        torch.div(pick, cz, rounding_mode="floor") % cy, pick % cz], 1).float()
    g = cell + torch.rand(cell.shape, generator=gen)  # points inside occupied cells, cell units
    x = torch.tensor(bake.grid.lo) + g * bake.grid.voxel
    planes = list(g.t().clone())
    c, flat = table.cells(planes)
    rows = table.row.index_select(0, flat)
    assert bool((rows < table.density.shape[1] - 1).all())  # every one has its own column
    from tinyserve_core.scene.frames import lerp_planes

    f = torch.stack([v - cv for v, cv in zip(planes, c)])
    sigma = torch.nn.functional.softplus(lerp_planes(table.density.index_select(1, rows), f)) / bake.grid.voxel
    assert torch.allclose(sigma, bake.sigma(x), rtol=1e-4, atol=1e-3)
    colour = lerp_planes(table.colour.index_select(0, rows).t().reshape(8, 3, -1), f).t()
    assert torch.allclose(colour, bake.colour(x), atol=1e-5)
    # classes: the cell's few most probable ones, normalised over them; the label is the
    # full distribution's at all but a few points in 10,000 (inside solids, where untrained
    # corners mix many classes)
    fast, full = table.class_probs(g), bake.class_probs(x)
    assert torch.allclose(fast.sum(1), torch.ones(len(g)), atol=1e-5)
    assert int((fast > 0).sum(1).max()) <= CLASSES_PER_CELL
    assert float((fast.argmax(1) == full.argmax(1)).float().mean()) > 0.999
    kept = fast > 0
    assert float((full * kept).sum(1).mean()) > 0.99  # the dropped tail is faint


def test_frame_labels_agree_with_every_class_lookup(lab):
    """The frame reads each ray's classes from its cell's CLASSES_PER_CELL most probable
    ones; with the full distribution (every class of the 8 corners) the labels differ on at
    most 1 pixel in 2,000 of a few poses."""
    bake = lab.bake
    lo = torch.tensor(bake.grid.lo)
    for az in (20.0, 150.0, 250.0):
        cam = lab.camera(azimuth=az, elevation=40, size=128)
        fast = bake.render(cam)
        exact_table = copy.copy(bake.cells)
        exact_table.class_probs = lambda g: bake.class_probs(lo + g * bake.grid.voxel)
        exact = as_result(render_frame(exact_table, bake.splat, bake.space, cam, bake.grid.voxel / 2,
                                       bake.background, bake.device), cam)
        assert (fast.label == exact.label).mean() > 0.9995
        assert np.abs(fast.entropy - exact.entropy).mean() < 0.01


def test_frame_rays_are_the_cameras_rays(lab):
    cam = orbit_camera(lab.spec.camera_target, 70.0, 33.0, 3.0, 40, 30)
    o, d = frame_rays(cam, torch.device("cpu"))
    o2, d2 = cam.rays()
    assert torch.allclose(o, o2) and torch.allclose(d, d2, atol=1e-6)


def test_fast_frame_is_as_close_to_the_reference_as_the_traced_frame(lab):
    """Against the every-pixel frame the fast one differs by its own sampling positions
    (it starts at splatted distances, not traced ones); against the 1/8-voxel reference
    both sample the same field, and the fast frame must be about as close to it as the
    adaptive frame traced from the eye (the renderer before) is."""
    bake = lab.bake
    for az, coarse in ((40.0, False), (160.0, False), (280.0, True)):
        cam = lab.camera(azimuth=az, elevation=40, size=96)
        fast = bake.render(cam, coarse=coarse)
        every = bake.render(cam, adaptive=False, coarse=coarse)
        # the motion frame samples a whole voxel and interpolates colour edges
        assert _psnr(fast.rgb, every.rgb) > (30.0 if coarse else 36.0)
        assert (fast.label == every.label).mean() > 0.99
        if coarse:
            continue
        ref = bake.render_reference(cam)
        traced = as_result(render_image(lambda o, d: bake.render_rays(o, d), cam, bake.device, bake.grid.voxel),
                           cam)
        assert _psnr(fast.rgb, ref.rgb) > _psnr(traced.rgb, ref.rgb) - 0.5
        assert (fast.label == ref.label).mean() > (traced.label == ref.label).mean() - 0.002


def test_rays_that_meet_nothing_are_background_without_marching(lab):
    """A camera looking away from the room: no start is finite and the frame is the
    background, opacity 0 and class 0 everywhere."""
    bake = lab.bake
    eye = np.array([0.0, 0.0, 4.0])
    cam = Camera(look_at(eye, eye + np.array([0.0, 0.2, 1.0])), 24, 24)
    start = bake.splat.starts(cam)
    assert start is not None and not bool(torch.isfinite(start).any())
    out = render_frame(bake.cells, bake.splat, bake.space, cam, bake.grid.voxel / 2, bake.background, bake.device)
    assert float(out["acc"].abs().max()) == 0.0
    assert torch.allclose(out["rgb"], torch.tensor(bake.background).expand(24 * 24, 3))
    assert bool((out["probs"].argmax(1) == 0).all())


def test_the_last_rays_finish_in_one_long_window(lab, monkeypatch):
    """Once few rays are left, one window takes them to their far bound (within
    TAIL_SAMPLES samples) instead of a round of tracing and marching each: fewer rounds,
    the same frame up to where its samples fall."""
    import tinyserve_core.scene.frames as frames

    bake = lab.bake
    cam = lab.camera(azimuth=60.0, elevation=40, size=128)
    o, d = frame_rays(cam, bake.device)
    near, far = ray_aabb(o, d, bake.grid.lo, bake.grid.hi)
    start = bake.splat.starts(cam)
    traces = []
    real_trace = frames._trace
    monkeypatch.setattr(frames, "_trace", lambda *a: traces.append(a[-2].numel()) or real_trace(*a))

    def render(tail: int):
        traces.clear()
        out = frames.render_cells(bake.cells, bake.space, o, d, start, near, far, bake.grid.voxel / 2,
                                  bake.background, tail_samples=tail)
        return as_result(out, cam), len(traces)

    (tail, tail_rounds), (plain, plain_rounds) = render(frames.TAIL_SAMPLES), render(0)
    assert tail_rounds < plain_rounds
    assert _psnr(tail.rgb, plain.rgb) > 45.0
    assert (tail.label == plain.label).mean() > 0.999


def test_a_frame_from_one_shared_eye_matches_per_ray_origins(lab):
    """`render_cells` broadcasts an eye given once (an expanded tensor, as a camera's rays
    are) instead of gathering it per ray: the frame is the one per-ray origins give."""
    import tinyserve_core.scene.frames as frames

    bake = lab.bake
    cam = lab.camera(azimuth=250.0, elevation=35, size=64)
    o, d = frame_rays(cam, bake.device)
    assert o.stride(0) == 0  # the camera's one eye, expanded
    near, far = ray_aabb(o, d, bake.grid.lo, bake.grid.hi)
    start = bake.splat.starts(cam)
    shared, per_ray = (as_result(frames.render_cells(bake.cells, bake.space, oo, d, start, near, far,
                                                     bake.grid.voxel / 2, bake.background), cam)
                       for oo in (o, o.contiguous().clone()))
    assert _psnr(shared.rgb, per_ray.rgb) > 80.0
    assert np.array_equal(shared.label, per_ray.label)
    assert np.allclose(shared.depth, per_ray.depth, atol=1e-4)


def test_flat_cells_of_stacked_points_are_the_cells_of_planes(lab):
    table = lab.bake.cells
    gen = torch.Generator().manual_seed(11)
    top = torch.tensor(lab.bake.occ.shape, dtype=torch.float32)[:, None]
    g = torch.rand(3, 3000, generator=gen) * (top + 2) - 1  # some points outside: both clamp
    _, flat = table.cells(list(g.clone()))
    assert torch.equal(table.flat_cells(g.clone()), flat)


def test_box_bounds_from_one_eye_are_ray_aabbs():
    """The frame's entry / exit distances, computed once per frame on direction planes, are
    `ray_aabb`'s exactly, axis-parallel directions (a zero component) included."""
    from tinyserve_core.scene.frames import eye_box_bounds

    gen = torch.Generator().manual_seed(5)
    d = torch.nn.functional.normalize(torch.randn(5000, 3, generator=gen), dim=1)
    d[:30, 1:] = 0.0
    d[:30, 0] = 1.0
    d[30:60, 0] = 0.0
    lo, hi = (-1.0, -0.5, 0.0), (2.0, 1.5, 1.2)
    for eye in ((0.3, 0.2, 0.5), (3.0, -2.0, 2.5)):  # inside the box and outside it
        e = torch.tensor(eye)
        near, far = ray_aabb(e.expand_as(d), d, lo, hi)
        n2, f2 = eye_box_bounds(e, d.t().contiguous(), lo, hi)
        assert torch.equal(n2, near) and torch.equal(f2, far)
