"""The interactive renderer: adaptive image-space sampling keeps the every-pixel frame
(edges cast, interiors interpolated), sphere tracing never skips an occupied cell, and the
lab's render device is checked."""

import math

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError
from tinyserve_core.scene.adaptive import render_image
from tinyserve_core.scene.bake import as_result
from tinyserve_core.scene.camera import orbit_camera
from tinyserve_core.scene.interactive import _trace


def _psnr(a, b) -> float:
    return -10 * math.log10(max(float(np.mean((a - b) ** 2)), 1e-12))


def test_adaptive_frame_matches_the_every_pixel_frame_with_fewer_rays(lab):
    bake = lab.bake
    cast = []

    def rays(o, d):
        cast.append(o.shape[0])
        return bake.render_rays(o, d)

    for az in (20.0, 140.0):
        cam = lab.camera(azimuth=az, elevation=40, size=128)
        fast = as_result(render_image(rays, cam, bake.device, bake.grid.voxel), cam)
        every = bake.render(cam, adaptive=False)
        assert _psnr(fast.rgb, every.rgb) > 36.0
        assert (fast.label == every.label).mean() > 0.995
        assert np.abs(fast.acc - every.acc).mean() < 0.01
    assert sum(cast) < 0.6 * 2 * 128 * 128  # about 40% of the rays are cast


@pytest.mark.parametrize("width,height", [(64, 48), (63, 47)])
def test_edges_are_cast_and_flat_regions_interpolated(width, height):
    """A synthetic frame: two flat half-planes meeting at a slanted edge. Interpolation
    is exact inside each half and the edge's pixels must be cast, so the adaptive frame
    equals the every-pixel one everywhere (odd sides too), and only a band along the edge
    is cast."""
    cam = orbit_camera((0, 0, 0), 0.0, 30.0, 3.0, width, height)
    seen = []

    def rays(o, d):
        seen.append(o.shape[0])
        side = (d[:, 0] + 0.3 * d[:, 1] > 0.05).float()
        probs = torch.stack([1 - side, side], 1)
        rgb = torch.stack([side, 0.5 * torch.ones_like(side), 1 - side], 1)
        return {"rgb": rgb, "depth": 2 + side, "probs": probs, "acc": torch.ones_like(side)}

    fast = render_image(rays, cam, torch.device("cpu"), voxel=0.025)
    o, d = cam.rays()
    every = rays(o, d)
    for key in every:
        assert torch.equal(fast[key], every[key]), key
    assert sum(seen[:-1]) < 0.45 * width * height  # the first pass and the edge band, not the frame


def test_without_colour_edges_only_label_changes_are_cast():
    """A synthetic frame of one label whose colour steps at a slanted line, and a second
    label past another line: colour_edges=False interpolates across the colour step but
    still casts along the label change, so labels equal the every-pixel frame's."""
    from tinyserve_core.scene.adaptive import render_pixels

    cam = orbit_camera((0, 0, 0), 0.0, 30.0, 3.0, 64, 48)
    o, d = cam.rays()

    def rays(o, d):
        # the camera looks along -x: world y runs across the image, z up it
        step = (d[:, 1] + 0.3 * d[:, 2] > 0.05).float()
        other = (d[:, 1] - 0.2 * d[:, 2] < -0.15).float()
        probs = torch.stack([1 - other, other], 1)
        rgb = torch.stack([step, 0.5 * torch.ones_like(step), 1 - step], 1)
        return {"rgb": rgb, "depth": 2 + other, "probs": probs, "acc": torch.ones_like(step)}

    every = rays(o, d)
    assert 0 < float(every["rgb"][:, 0].mean()) < 1 and 0 < float(every["probs"][:, 1].mean()) < 1
    counts = {}
    for colour_edges in (True, False):
        seen = []

        def cast(idx):
            seen.append(idx.numel())
            return rays(o.index_select(0, idx), d.index_select(0, idx))

        out = render_pixels(cast, cam, torch.device("cpu"), voxel=0.025, colour_edges=colour_edges)
        counts[colour_edges] = sum(seen[1:])
        assert torch.equal(out["probs"].argmax(1), every["probs"].argmax(1))
        if colour_edges:
            assert torch.equal(out["rgb"], every["rgb"])
        else:
            assert not torch.equal(out["rgb"], every["rgb"])  # the colour step was interpolated
    assert counts[False] < counts[True]


def test_sphere_tracing_never_passes_an_occupied_cell(lab, first_occupied):
    """Traced distances are no further than the first occupied cell along each ray,
    found by a dense march at an eighth of a voxel."""
    bake, space = lab.bake, lab.bake.space
    cam = lab.camera(azimuth=75, elevation=35, size=48)
    o, d = cam.rays()
    from tinyserve_core.scene.volume import ray_aabb

    near, far = ray_aabb(o, d, bake.grid.lo, bake.grid.hi)
    t = near.clone()
    rays = torch.nonzero(far > near).squeeze(1)
    _trace(space, space.to_grid(o), d / bake.grid.voxel, t, far, rays, 64)
    first = first_occupied(o, d, rays, near, far, far[rays])
    assert bool((t[rays] <= first + 1e-5).all())
    assert float((t[rays] - near[rays]).mean()) > 0.5  # and it does skip: most of the way is empty


def test_render_device_is_checked(tmp_path):
    from tinyserve_core.scene.lab import render_device

    assert render_device("cpu").type == "cpu"
    assert render_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError) as e:
        render_device("tpu")
    assert e.value.field == "device"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as e:
            render_device("cuda")
        assert "not available" in str(e.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_frames_match_the_cpu_frames_on_random_poses(lab, monkeypatch):
    from tinyserve_core.scene import bake
    from tinyserve_core.scene.lab import SceneLab

    gpu = SceneLab("room", device="cuda")
    if gpu._frames.compiled() is not None:
        # the compiled GPU frames cast every pixel (no adaptive interpolation); the CPU
        # frames take the same plan here, so that the two devices are held to one frame
        monkeypatch.setitem(bake.COMPILED_LEVELS, "cpu", bake.COMPILED_LEVELS["cuda"])
    rng = np.random.default_rng(19)
    for _ in range(4):
        cam = lab.camera(azimuth=float(rng.uniform(0, 360)), elevation=float(rng.uniform(15, 70)), size=96)
        for quality in ("motion", "bake", "full"):
            a, b = lab.render(cam, quality), gpu.render(cam, quality)
            assert _psnr(a.rgb, b.rgb) > 40.0, quality
            assert (a.label == b.label).mean() > 0.995, quality
            assert np.abs(a.acc - b.acc).mean() < 0.01, quality


def test_render_latency_reports_the_fast_frame_against_the_every_pixel_frame(lab):
    from tinyserve_core.eval.scene import render_latency

    r = render_latency(lab, size=48)
    assert r["device"] == "cpu"
    assert r["bake_48_p95_ms"] >= r["bake_48_p50_ms"] > 0 and r["motion_48_p50_ms"] > 0
    assert r["bake_vs_every_pixel_psnr"] > 30.0 and r["bake_vs_every_pixel_labels"] > 0.98
    # both frames against the finer reference: the every-pixel frame has its own error
    assert 25.0 < r["every_pixel_vs_reference_psnr"] < 60.0 and r["bake_vs_reference_psnr"] > 25.0
    assert r["bake_vs_reference_labels"] > 0.97 and r["every_pixel_vs_reference_labels"] > 0.97
    assert r["motion_vs_bake_psnr"] > 25.0 and r["motion_vs_bake_labels"] > 0.95
    assert "bake_vs_reference_psnr" not in render_latency(lab, size=32, reference_poses=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_eval_scene_on_a_missing_gpu_is_one_line(capsys):
    from tinyserve_core.cli import main

    assert main(["eval", "scene", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device" in err[0] and "CUDA" in err[0]


def test_bench_scene_prints_the_table_and_writes_json(tmp_path, capsys):
    from tinyserve_core.cli import main
    from tinyserve_core.loaders import load_json

    out = tmp_path / "scene.json"
    assert main(["bench", "scene", "--sizes", "32", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bake 32x32" in text and "motion 32x32" in text and "dB, labels" in text
    assert "1/8-voxel reference" in text and "vs the bake frame" in text
    rep = load_json(str(out), max_bytes=1 << 20)
    assert rep["device"] == "cpu" and rep["results"][0]["bake_32_p50_ms"] > 0
    assert main(["bench", "scene", "--sizes", "32,x"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_cell_indices_are_exact_on_grids_past_float_precision():
    """Above 2^24 cells a float32 dot product rounds odd indices; the table switches to
    integer arithmetic there."""
    from tinyserve_core.scene.field import GridSpec
    from tinyserve_core.scene.interactive import EmptySpace

    grid = GridSpec((0.0, 0.0, 0.0), (2.57, 2.56, 2.56), 0.01)  # 257 x 256 x 256 cells, just past 2^24
    occ = torch.zeros(257, 256, 256, dtype=torch.bool)
    occ[256, 255, 255] = True
    space = EmptySpace(grid, occ)
    g = torch.tensor([[256.5, 255.5, 255.5], [256.5, 255.5, 254.5], [3.5, 7.5, 11.5]])
    last = 257 * 256 * 256 - 1  # odd and above 2^24: float32 cannot hold it
    assert space.cells(g.clone()).tolist() == [last, last - 1, (3 * 256 + 7) * 256 + 11]
    assert bool(space.occupied[space.cells(g.clone())][0])


def test_the_tracers_padded_table_reads_what_clamping_into_the_grid_reads(lab):
    """A traced point may sit up to a cell outside the grid's box (float rounding at the
    entry and exit faces): the tracer's padded skip table gives it the clamped cell's skip."""
    space = lab.bake.space
    gen = torch.Generator().manual_seed(7)
    top = torch.tensor(space.shape, dtype=torch.float32)
    inside = torch.rand(4000, 3, generator=gen) * top
    # just outside every face, and at the far faces exactly (a ray's exit point)
    outside = torch.cat([inside.clone().index_fill_(1, torch.tensor([k]), v) for k in range(3)
                         for v in (-0.3, float(top[k]), float(top[k]) + 0.4)])
    g = torch.cat([inside, outside])
    interior = space.trace_skip.view(*(n + 2 for n in space.shape))[1:-1, 1:-1, 1:-1].reshape(-1)
    clamped = interior[space.cells(g.clone())]
    padded = space.trace_skip[space.trace_cells(g + 1)]
    assert torch.equal(padded, clamped)


def test_tracing_from_one_shared_eye_matches_per_ray_origins(lab):
    """A camera's rays share one eye: given as one row [1, 3] it is broadcast, not gathered,
    and the traced distances are the same as with a row per ray."""
    bake, space = lab.bake, lab.bake.space
    cam = lab.camera(azimuth=130, elevation=30, size=40)
    o, d = cam.rays()
    from tinyserve_core.scene.volume import ray_aabb

    near, far = ray_aabb(o, d, bake.grid.lo, bake.grid.hi)
    rays = torch.nonzero(far > near).squeeze(1)
    per_ray, shared = near.clone(), near.clone()
    _trace(space, space.to_grid(o), d / bake.grid.voxel, per_ray, far, rays, 32)
    _trace(space, space.to_grid(o[:1]), d / bake.grid.voxel, shared, far, rays, 32)
    assert torch.allclose(shared, per_ray, atol=1e-5)
    assert float((shared[rays] - near[rays]).mean()) > 0.5


@pytest.mark.parametrize("ch,cw", [(5, 7), (8, 8), (1, 4)])
def test_upsampling_is_bilinear_with_aligned_corners(ch, cw):
    """`adaptive._upsample` writes its means straight into the output's strided slices: the
    result is the aligned-corners bilinear image of the coarse one, channels last."""
    import torch.nn.functional as F

    from tinyserve_core.scene.adaptive import _upsample

    c = torch.rand(ch, cw, 5, generator=torch.Generator().manual_seed(ch * 31 + cw))
    out = torch.full((2 * ch - 1, 2 * cw - 1, 5), float("nan"))
    _upsample(c, out)
    want = F.interpolate(c.permute(2, 0, 1)[None], size=(2 * ch - 1, 2 * cw - 1), mode="bilinear",
                         align_corners=True)[0].permute(1, 2, 0)
    assert torch.allclose(out, want, atol=1e-6)
