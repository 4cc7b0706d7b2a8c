"""Volume rendering with occupancy-grid empty-space skipping for training and full
renders of anything with `sigma(x)` and `appearance(x) -> (rgb, probs)` (the trained
field, its bake); the interactive renderer is in `interactive`.

Samples are packed: only points in occupied cells are evaluated, and colour/semantics only
where the compositing weight matters (two passes, as in nerfacc), so most of the work of a
ray is the handful of samples at its first surface.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from .field import GridSpec

WEIGHT_EPS = 1e-4


class RadianceField(Protocol):
    grid: GridSpec
    num_classes: int

    def sigma(self, x: torch.Tensor) -> torch.Tensor: ...
    def appearance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def slab_bounds(to_lo, to_hi, d) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances through a box, from each axis's offsets to its faces
    (`to_lo[i]` = lo - origin, `to_hi[i]` = hi - origin) and directions (`d[i]`), any
    shapes that broadcast; far <= near means a miss."""
    near = far = None
    for i in range(3):
        inv = 1.0 / torch.where(d[i].abs() < 1e-9, torch.full_like(d[i], 1e-9), d[i])
        t1, t2 = to_lo[i] * inv, to_hi[i] * inv
        enter, leave = torch.minimum(t1, t2), torch.maximum(t1, t2)
        near = enter if near is None else torch.maximum(near, enter)
        far = leave if far is None else torch.minimum(far, leave)
    return near.clamp_min(0), far


def ray_aabb(o: torch.Tensor, d: torch.Tensor, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays (rows o, d [..., 3]) through the box lo..hi."""
    lo, hi = (torch.tensor(v, dtype=o.dtype, device=o.device) for v in (lo, hi))
    return slab_bounds((lo - o).unbind(-1), (hi - o).unbind(-1), d.unbind(-1))


BLOCK = 4  # cells per coarse block side, and fine samples per coarse step


def block_occupancy(occ: torch.Tensor) -> torch.Tensor:
    """Blocks of BLOCK^3 cells holding any occupied cell, dilated by one block: a coarse
    sample then vouches for the next BLOCK fine samples (they lie within half a block of
    it, so any occupied cell they touch is in its block or a neighbour)."""
    pad = [(-n) % BLOCK for n in occ.shape]
    x = torch.nn.functional.pad(occ.float()[None, None], (0, pad[2], 0, pad[1], 0, pad[0]))
    b = torch.nn.functional.max_pool3d(x, BLOCK)
    return torch.nn.functional.max_pool3d(b, 3, stride=1, padding=1)[0, 0] > 0


def _flat_cells(og: torch.Tensor, dg: torch.Tensor, t: torch.Tensor, shape, scale: float = 1.0) -> torch.Tensor:
    """Flat index into a grid of `shape` of the points og + t * dg (grid units / scale)."""
    flat = None
    for axis, size in enumerate(shape):
        c = torch.addcmul(og[..., axis], t, dg[..., axis]).div_(scale).long().clamp_(0, size - 1)
        flat = c if flat is None else flat.mul_(size).add_(c)
    return flat


def march(grid: GridSpec, occ: torch.Tensor, o: torch.Tensor, d: torch.Tensor, step: float,
          generator: torch.Generator | None = None):
    """Packed samples in occupied cells: (ray index, sample index, t) for each, plus
    near/far per ray and the padded sample count. Two levels: coarse steps over occupied
    blocks first, then the fine samples of those steps against the cells, so the work
    grows with the occupied length of a ray, not its full length."""
    near, far = ray_aabb(o, d, grid.lo, grid.hi)
    n = o.shape[0]
    span = (far - near).clamp_min(0)
    sc = max(1, math.ceil(float(span.max()) / (step * BLOCK))) if n else 1
    dev = o.device
    jitter = (torch.rand(n, 1, generator=generator, device=generator.device).to(dev) if generator is not None
              else torch.full((n, 1), 0.5, device=dev))
    og = (o - torch.tensor(grid.lo, dtype=o.dtype, device=dev)) / grid.voxel
    dg = d / grid.voxel
    blocks = block_occupancy(occ)
    tc = near[:, None] + (torch.arange(sc, dtype=o.dtype, device=dev)[None] * BLOCK + jitter) * step  # [N, Sc]
    hit_c = blocks.reshape(-1)[_flat_cells(og[:, None], dg[:, None], tc, blocks.shape, BLOCK)] & (tc < far[:, None])
    ray_c, i = hit_c.nonzero(as_tuple=True)
    k = (i[:, None] * BLOCK + torch.arange(BLOCK, device=dev)[None]).reshape(-1)
    ray = ray_c.repeat_interleave(BLOCK)
    t = near[ray] + (k + jitter[ray, 0]) * step
    keep = occ.reshape(-1)[_flat_cells(og[ray], dg[ray], t, occ.shape)] & (t < far[ray])
    return ray[keep], k[keep], t[keep], near, far, sc * BLOCK


def composite(sigma: torch.Tensor, ray_idx: torch.Tensor, k: torch.Tensor, n: int, s: int, step: float) -> torch.Tensor:
    """Compositing weights of packed samples (front-to-back, skipped samples are empty)."""
    tau = torch.zeros(n, s, dtype=sigma.dtype, device=sigma.device).index_put((ray_idx, k), sigma * step)
    trans = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
    w = trans * (1 - torch.exp(-tau))
    return w[ray_idx, k]


def render_rays(field: RadianceField, occ: torch.Tensor, o: torch.Tensor, d: torch.Tensor, step: float,
                background=(1.0, 1.0, 1.0), generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """rgb [N,3] over the background, depth [N] (expected ray distance, far where empty),
    probs [N,K] (class 0 takes the empty remainder), acc [N]."""
    n = o.shape[0]
    ray_idx, k, t, near, far, s = march(field.grid, occ, o, d, step, generator)
    pts = o[ray_idx] + t[:, None] * d[ray_idx]
    w = composite(field.sigma(pts), ray_idx, k, n, s, step)
    live = w.detach() > WEIGHT_EPS
    ray_l, w_l = ray_idx[live], w[live]
    rgb_s, probs_s = field.appearance(pts[live])
    kw = {"dtype": w.dtype, "device": w.device}
    acc = torch.zeros(n, **kw).index_add(0, ray_idx, w)
    rgb = torch.zeros(n, 3, **kw).index_add(0, ray_l, w_l[:, None] * rgb_s)
    probs = torch.zeros(n, field.num_classes, **kw).index_add(0, ray_l, w_l[:, None] * probs_s)
    empty = (1 - acc).clamp_min(0)
    probs = torch.cat([probs[:, :1] + empty[:, None], probs[:, 1:]], dim=1)
    depth = torch.zeros(n, **kw).index_add(0, ray_idx, w * t) + empty * far.clamp_min(near)
    bg = torch.tensor(background, **kw)
    return {"rgb": rgb + empty[:, None] * bg, "depth": depth, "probs": probs, "acc": acc}


@torch.no_grad()
def render_chunked(field: RadianceField, occ: torch.Tensor, o: torch.Tensor, d: torch.Tensor, step: float,
                   background=(1.0, 1.0, 1.0), chunk: int = 8192) -> dict[str, torch.Tensor]:
    parts = [render_rays(field, occ, o[i:i + chunk], d[i:i + chunk], step, background) for i in range(0, o.shape[0], chunk)]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
