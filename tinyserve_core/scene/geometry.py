"""Exact geometry of the primitives in torch: ray intersection (the analytic renderer) and
signed distance (the ground truth that planned paths are checked against).

Cylinders and cones are solids of revolution about +z, so their signed distance is a 2D
polygon distance in (radial distance, height): one routine serves both exactly.
"""

from __future__ import annotations

import torch

from .spec import Primitive, SceneSpec

_EPS = 1e-9
INF = float("inf")


def _safe_dir(d: torch.Tensor) -> torch.Tensor:
    # Axis-parallel rays would give 0/0 = nan in the slab test; a tiny offset keeps them inf.
    return torch.where(d.abs() < _EPS, torch.full_like(d, _EPS), d)


def _first_positive(*candidates: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest valid hit among (t, normal) candidates; invalid entries carry t = inf."""
    ts = torch.stack([c[0] for c in candidates], dim=-1)
    t, idx = ts.min(dim=-1)
    normals = torch.stack([c[1] for c in candidates], dim=-2)
    n = normals.gather(-2, idx[:, None, None].expand(-1, 1, 3)).squeeze(-2)
    return t, n


def _valid(t: torch.Tensor, ok: torch.Tensor, tmin: float) -> torch.Tensor:
    return torch.where(ok & (t > tmin) & torch.isfinite(t), t, torch.full_like(t, INF))


def intersect(p: Primitive, o: torch.Tensor, d: torch.Tensor, tmin: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray distances t [N] (inf on a miss) and outward unit normals [N, 3]."""
    dt, dev = o.dtype, o.device
    if p.kind == "box":
        c = torch.tensor(p.center, dtype=dt, device=dev)
        h = torch.tensor(p.size, dtype=dt, device=dev) / 2
        inv = 1.0 / _safe_dir(d)
        t1, t2 = (c - h - o) * inv, (c + h - o) * inv
        tnear, axis = torch.minimum(t1, t2).max(dim=-1)
        tfar = torch.maximum(t1, t2).min(dim=-1).values
        n = torch.zeros_like(o)
        n.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
        return _valid(tnear, tfar >= tnear, tmin), n
    if p.kind == "sphere":
        c = torch.tensor(p.center, dtype=dt, device=dev)
        oc = o - c
        b = (oc * d).sum(-1)
        disc = b * b - ((oc * oc).sum(-1) - p.radius**2)
        t = -b - torch.sqrt(disc.clamp_min(0))
        n = (oc + t[:, None].nan_to_num(posinf=0) * d) / p.radius
        return _valid(t, disc >= 0, tmin), n
    bx, by, bz = p.base
    ox, oy, oz = o[:, 0] - bx, o[:, 1] - by, o[:, 2]
    dx, dy, dz = d[:, 0], d[:, 1], _safe_dir(d[:, 2:3])[:, 0]
    R, H = p.radius, p.height
    zero = torch.zeros_like(ox)

    def cap(z: float, nz: float):
        t = (z - oz) / dz
        x, y = ox + t * dx, oy + t * dy
        n = torch.stack([zero, zero, zero + nz], -1)
        return _valid(t, x * x + y * y <= R * R, tmin), n

    if p.kind == "cylinder":
        a = (dx * dx + dy * dy).clamp_min(_EPS)
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - R * R)
        t = (-b - torch.sqrt(disc.clamp_min(0))) / a
        z = oz + t * dz
        side_n = torch.stack([(ox + t * dx) / R, (oy + t * dy) / R, zero], -1).nan_to_num(0.0)
        side = (_valid(t, (disc >= 0) & (z >= bz) & (z <= bz + H), tmin), side_n)
        return _first_positive(side, cap(bz + H, 1.0), cap(bz, -1.0))
    # cone, apex at the top: radial^2 = k^2 (apex_z - z)^2 for 0 <= apex_z - z <= H
    k = R / H
    w = bz + H - oz
    a = dx * dx + dy * dy - k * k * dz * dz
    b = 2 * (ox * dx + oy * dy + k * k * w * dz)
    c = ox * ox + oy * oy - k * k * w * w
    disc = b * b - 4 * a * c
    sq = torch.sqrt(disc.clamp_min(0))
    a_safe = torch.where(a.abs() < _EPS, torch.full_like(a, _EPS), a)
    roots = []
    for t in ((-b - sq) / (2 * a_safe), (-b + sq) / (2 * a_safe)):
        h = w - t * dz
        x, y = ox + t * dx, oy + t * dy
        r = torch.sqrt(x * x + y * y).clamp_min(_EPS)
        n = torch.stack([x / r, y / r, zero + k], -1) / (1 + k * k) ** 0.5
        roots.append((_valid(t, (disc >= 0) & (h >= 0) & (h <= H), tmin), n))
    return _first_positive(*roots, cap(bz, -1.0))


def _polygon_sdf(q: torch.Tensor, verts: list[tuple[float, float]]) -> torch.Tensor:
    """Signed distance from 2D points [N, 2] to a closed polygon (negative inside)."""
    v = torch.tensor(verts, dtype=q.dtype)
    d = torch.full(q.shape[:1], INF, dtype=q.dtype)
    inside = torch.zeros(q.shape[:1], dtype=torch.bool)
    for i in range(len(verts)):
        a, b = v[i], v[(i + 1) % len(verts)]
        e, w = b - a, q - a
        s = (w @ e / (e @ e)).clamp(0, 1)
        d = torch.minimum(d, (w - s[:, None] * e).norm(dim=-1))
        # crossing-number test on edges straddling the point's height
        straddle = (a[1] > q[:, 1]) != (b[1] > q[:, 1])
        x_at = a[0] + (q[:, 1] - a[1]) * e[0] / (e[1] if e[1] != 0 else _EPS)
        inside ^= straddle & (q[:, 0] < x_at)
    return torch.where(inside, -d, d)


def sdf(p: Primitive, x: torch.Tensor) -> torch.Tensor:
    """Signed distance [N] from points [N, 3] to the primitive (negative inside)."""
    dt = x.dtype
    if p.kind == "box":
        q = (x - torch.tensor(p.center, dtype=dt)).abs() - torch.tensor(p.size, dtype=dt) / 2
        return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
    if p.kind == "sphere":
        return (x - torch.tensor(p.center, dtype=dt)).norm(dim=-1) - p.radius
    bx, by, bz = p.base
    rq = torch.stack([torch.hypot(x[:, 0] - bx, x[:, 1] - by), x[:, 2] - bz], -1)
    R, H = p.radius, p.height
    # Mirror the profile across the axis so the axis itself is not a boundary edge.
    if p.kind == "cylinder":
        return _polygon_sdf(rq, [(-R, 0.0), (R, 0.0), (R, H), (-R, H)])
    return _polygon_sdf(rq, [(-R, 0.0), (R, 0.0), (0.0, H)])


def scene_sdf(spec: SceneSpec, x: torch.Tensor, exclude: tuple[str, ...] = ()) -> torch.Tensor:
    """Distance [N] from points to the nearest surface of every object not excluded."""
    d = torch.full(x.shape[:1], INF, dtype=x.dtype)
    for obj in spec.objects:
        if obj.label in exclude:
            continue
        for prim in obj.primitives:
            d = torch.minimum(d, sdf(prim, x))
    return d


def footprint_distance(p: Primitive, xy: torch.Tensor, z0: float, z1: float) -> torch.Tensor:
    """Horizontal signed distance [N] from points [N, 2] to the primitive's cross-sections
    between heights z0 and z1: the exact clearance of a vertical cylindrical body spanning
    those heights. These shapes' horizontal slices are nested, so the widest slice in the
    range is the union of them all; inf where the primitive lies outside the range."""
    inf = torch.full(xy.shape[:1], INF, dtype=xy.dtype)
    (_, _, lo_z), (_, _, hi_z) = p.bounds()
    if hi_z < z0 or lo_z > z1:
        return inf
    if p.kind == "box":
        q = (xy - torch.tensor(p.center[:2], dtype=xy.dtype)).abs() - torch.tensor(p.size[:2], dtype=xy.dtype) / 2
        return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
    if p.kind == "sphere":
        cz = p.center[2]
        zs = min(max(cz, z0), z1)
        r = (max(p.radius**2 - (zs - cz) ** 2, 0.0)) ** 0.5
        centre = p.center[:2]
    elif p.kind == "cylinder":
        r, centre = p.radius, p.base[:2]
    else:
        zs = max(p.base[2], z0)
        r, centre = p.radius * (p.base[2] + p.height - zs) / p.height, p.base[:2]
    return (xy - torch.tensor(centre, dtype=xy.dtype)).norm(dim=-1) - r
