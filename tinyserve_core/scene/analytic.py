"""The analytic renderer: exact ray casting of the scene primitives with Lambert shading.

It produces the NeRF's training views and the ground truth it is judged against. The
light is directional and the shading view-independent, so a radiance field needs no
view-direction input to reproduce it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera
from .geometry import intersect
from .spec import SceneSpec


@dataclass
class Hits:
    depth: torch.Tensor  # [N] ray distance, inf where nothing is hit
    label: torch.Tensor  # [N] int64 class id, 0 = background
    rgb: torch.Tensor  # [N, 3] shaded colour, background colour on a miss


def cast(spec: SceneSpec, o: torch.Tensor, d: torch.Tensor, chunk: int = 1 << 15) -> Hits:
    out = [_cast(spec, o[i:i + chunk], d[i:i + chunk]) for i in range(0, o.shape[0], chunk)]
    return Hits(*(torch.cat([getattr(h, f) for h in out]) for f in ("depth", "label", "rgb")))


def _cast(spec: SceneSpec, o: torch.Tensor, d: torch.Tensor) -> Hits:
    n, dev = o.shape[0], o.device
    best = torch.full((n,), float("inf"), device=dev)
    label = torch.zeros(n, dtype=torch.int64, device=dev)
    normal = torch.zeros(n, 3, device=dev)
    albedo = torch.tensor(spec.background, device=dev).expand(n, 3).clone()
    for cls, obj in enumerate(spec.objects, start=1):
        for prim in obj.primitives:
            t, nrm = intersect(prim, o, d)
            closer = t < best
            best = torch.where(closer, t, best)
            label = torch.where(closer, cls, label)
            c = closer[:, None]
            normal = torch.where(c, nrm, normal)
            albedo = torch.where(c, torch.tensor(prim.color, device=dev), albedo)
    light = torch.tensor(spec.light_dir, device=dev)
    light = light / light.norm()
    lambert = (normal @ light).clamp_min(0)
    shade = spec.ambient + (1 - spec.ambient) * lambert
    hit = torch.isfinite(best)
    rgb = torch.where(hit[:, None], albedo * shade[:, None], albedo)
    return Hits(best, label, rgb.clamp(0, 1))


def render_analytic(spec: SceneSpec, cam: Camera) -> dict[str, np.ndarray]:
    """Ground-truth images: rgb [H,W,3] float32, depth [H,W] (inf = background), label [H,W]."""
    o, d = cam.rays()
    h = cast(spec, o, d)
    shape = (cam.height, cam.width)
    return {"rgb": h.rgb.reshape(*shape, 3).numpy(), "depth": h.depth.reshape(shape).numpy(),
            "label": h.label.reshape(shape).numpy()}
