import math

import numpy as np
import torch

from tinyserve_core.scene.analytic import cast, render_analytic
from tinyserve_core.scene.camera import HELDOUT_RINGS, camera_ring
from tinyserve_core.scene.geometry import footprint_distance, intersect, scene_sdf, sdf
from tinyserve_core.scene.spec import Primitive

C = (0.2, 0.2, 0.2)


def _ray(o, d):
    d = torch.tensor([d], dtype=torch.float32)
    return torch.tensor([o], dtype=torch.float32), d / d.norm()


def test_primitive_hits_match_closed_form():
    cases = [
        (Primitive("sphere", C, center=(0, 0, 0), radius=1.0), (0, 0, 5), (0, 0, -1), 4.0, (0, 0, 1)),
        (Primitive("box", C, center=(0, 0, 0), size=(2, 4, 6)), (5, 0, 0), (-1, 0, 0), 4.0, (1, 0, 0)),
        (Primitive("cylinder", C, base=(0, 0, 0), radius=0.5, height=2.0), (0, 3, 1), (0, -1, 0), 2.5, (0, 1, 0)),
        (Primitive("cylinder", C, base=(0, 0, 0), radius=0.5, height=2.0), (0.1, 0, 4), (0, 0, -1), 2.0, (0, 0, 1)),
        # cone of radius 1, height 2: at z = 1 its radius is 0.5
        (Primitive("cone", C, base=(0, 0, 0), radius=1.0, height=2.0), (3, 0, 1), (-1, 0, 0), 2.5,
         (2 / math.sqrt(5), 0, 1 / math.sqrt(5))),
        (Primitive("cone", C, base=(0, 0, 0), radius=1.0, height=2.0), (0.2, 0, -3), (0, 0, 1), 3.0, (0, 0, -1)),
    ]
    for prim, o, d, t_exp, n_exp in cases:
        t, n = intersect(prim, *_ray(o, d))
        assert abs(float(t[0]) - t_exp) < 1e-5, prim.kind
        assert np.allclose(n[0].numpy(), n_exp, atol=1e-5), prim.kind
    t, _ = intersect(cases[0][0], *_ray((0, 3, 5), (0, 0, -1)))
    assert math.isinf(float(t[0]))


def test_rendered_depth_lands_on_the_surfaces(spec):
    cam = camera_ring(spec.camera_target, spec.camera_distance, HELDOUT_RINGS, 48)[0]
    o, d = cam.rays()
    hits = cast(spec, o, d)
    hit = torch.isfinite(hits.depth)
    assert 0.3 < float(hit.float().mean()) < 1.0
    pts = (o + hits.depth.nan_to_num(posinf=0)[:, None] * d)[hit].double()
    assert float(scene_sdf(spec, pts).abs().max()) < 1e-4  # every depth is exactly on a surface
    again = render_analytic(spec, cam)
    assert np.array_equal(again["label"].reshape(-1), hits.label.numpy())


def test_sdf_and_footprint_agree_with_the_shapes():
    cone = Primitive("cone", C, base=(0, 0, 0), radius=1.0, height=2.0)
    x = torch.tensor([[0.0, 0.0, 0.5], [3.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    d = sdf(cone, x)
    assert d[0] < 0 and abs(float(d[1]) - 2.0) < 1e-9 and abs(float(d[2]) - 1.0) < 1e-9
    # a body spanning z in [1, 2] sees the cone's slice at z = 1, radius 0.5
    fd = footprint_distance(cone, torch.tensor([[2.0, 0.0]], dtype=torch.float64), 1.0, 2.0)
    assert abs(float(fd[0]) - 1.5) < 1e-9
    box = Primitive("box", C, center=(0, 0, 1), size=(1, 1, 0.2))
    assert math.isinf(float(footprint_distance(box, torch.zeros(1, 2, dtype=torch.float64), 0.0, 0.5)[0]))
