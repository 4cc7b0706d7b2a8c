"""The shipped trained field, its bake, picking, weights I/O and a training smoke run."""

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError, ModelLoadError, TinyServeError
from tinyserve_core.scene.analytic import render_analytic
from tinyserve_core.scene.camera import HELDOUT_RINGS, camera_ring
from tinyserve_core.scene.geometry import scene_sdf
from tinyserve_core.scene.metrics import psnr
from tinyserve_core.scene.train import TrainConfig, train_field
from tinyserve_core.scene.weights import load_weights, save_weights


def _heldout(spec, size):
    return camera_ring(spec.camera_target, spec.camera_distance, HELDOUT_RINGS, size)


def test_bake_depth_and_labels_match_the_analytic_scene(lab, spec):
    cam = _heldout(spec, 96)[1]
    gt = render_analytic(spec, cam)
    r = lab.render(cam)
    hit = np.isfinite(gt["depth"]) & (r.acc > 0.5)
    assert hit.mean() > 0.5
    assert np.median(np.abs(r.depth[hit] - gt["depth"][hit])) < 0.02  # metres
    assert (r.label == gt["label"]).mean() > 0.95
    sky = ~np.isfinite(gt["depth"])
    assert r.acc[sky].mean() < 0.05
    assert np.all(r.entropy >= 0) and r.entropy[hit].mean() < 0.5


def test_full_quality_render_is_sharp(lab, spec):
    cam = _heldout(spec, 128)[0]
    gt = render_analytic(spec, cam)
    full, bake = lab.render(cam, "full"), lab.render(cam, "bake")
    p_full = psnr(float(((full.rgb - gt["rgb"]) ** 2).mean()))
    assert p_full > 29.0
    assert p_full > psnr(float(((bake.rgb - gt["rgb"]) ** 2).mean()))
    with pytest.raises(ConfigError):
        lab.render(cam, "ultra")


def test_pick_returns_the_object_under_the_pixel(lab, spec):
    cam = lab.camera(azimuth=30, elevation=40, size=128)
    gt = render_analytic(spec, cam)
    k = spec.labels.index("red mug")
    ys, xs = np.nonzero(gt["label"] == k)
    y, x = int(np.median(ys)), int(np.median(xs))
    p = lab.pick(cam, x + 0.5, y + 0.5)
    assert p.hit and p.label == "red mug" and p.confidence > 0.5
    assert abs(p.depth - gt["depth"][y, x]) < 0.03
    assert abs(float(scene_sdf(spec, torch.tensor([p.point], dtype=torch.float64))[0])) < 0.03
    sky = lab.pick(cam, 64.5, 0.5)  # the top row looks over the walls into the background
    assert not sky.hit and sky.label == "background"


def test_weights_roundtrip_and_damaged_file(lab, spec, tmp_path):
    path = tmp_path / "room.weights.safetensors"
    size = save_weights(path, lab.field, lab.occ, spec, {"note": "test"})
    assert size < 5_000_000
    field, occ, meta = load_weights(path, spec)
    assert torch.equal(occ, lab.occ) and meta["stats"]["note"] == "test"
    x = torch.rand(500, 3) * 2 - 1
    assert torch.allclose(field.sigma(x), lab.field.sigma(x))
    bad = tmp_path / "bad.weights.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(TinyServeError) as e:
        load_weights(bad)
    assert str(e.value).startswith(f"{bad}: header: ")
    with pytest.raises(ModelLoadError):
        load_weights(tmp_path / "missing.safetensors")


def test_training_smoke_reports_progress_and_cancels(spec):
    seen = []

    def cb(p):
        seen.append(p)
        return p.step >= 6  # cancel

    cfg = TrainConfig(size=16, iters=50, batch_rays=256, voxel=0.1, occ_warmup=2, occ_every=2)
    field, occ, stats = train_field(spec, cfg, cb, preview_every=3)
    assert stats["cancelled"] and stats["steps"] == 6 and [p.step for p in seen] == list(range(1, 7))
    previews = [p.preview for p in seen if p.preview is not None]
    assert len(previews) == 2 and previews[0].shape == (16, 16, 3)
    assert seen[-1].loss < seen[0].loss and occ.any()
    with pytest.raises(ConfigError):
        train_field(spec, TrainConfig(iters=0))
