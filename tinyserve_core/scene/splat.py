"""Per-pixel start distances by splatting: the occupancy grid's surface cells (occupied
cells with an empty face neighbour, through which every ray from empty space enters
occupied space) are projected into the image once per frame, those whose open face the
eye lies in front of, each as the exact pixel bounds of its bounding sphere, and a
z-buffer of 2x2-pixel blocks keeps the smallest distance from the eye to any of those
cells (to its nearest point) that a ray of the block could reach.

A ray through a pixel no cell covers meets no occupied cell (background, nothing to
march); every other ray may start at its pixel's value without passing an occupied cell.
This replaces the sphere tracing of a frame's first round (a dozen whole-array steps per
ray, repeated) with a few operations over the surface cells and one scatter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .camera import Camera
from .field import GridSpec

# pixel-centre slack on a sphere's projected bounds: float rounding must never drop a pixel
EDGE_SLACK_PX = 0.01


def surface_cells(grid: GridSpec, occ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The occupied cells (occ is [X-1, Y-1, Z-1]) with an empty face neighbour (or the
    outside of the grid there): world centres [K, 3] and which of their six faces
    (-x, +x, -y, +y, -z, +z) open onto empty space [K, 6]. A ray crosses from cell to cell
    through faces, so the first occupied cell along it is one of these, entered through
    one of its open faces."""
    empty = F.pad((~occ)[None, None].float(), (1, 1, 1, 1, 1, 1), value=1.0)[0, 0] > 0
    x, y, z = occ.shape
    inner = (slice(1, x + 1), slice(1, y + 1), slice(1, z + 1))
    faces = []
    for axis in range(3):
        for shift in (-1, 1):
            sl = list(inner)
            sl[axis] = slice(inner[axis].start + shift, inner[axis].stop + shift)
            faces.append(empty[tuple(sl)])
    open_faces = torch.stack(faces, -1) & occ[..., None]
    idx = torch.nonzero(open_faces.any(-1))
    centres = torch.tensor(grid.lo, dtype=torch.float32) + (idx.float() + 0.5) * grid.voxel
    return centres, open_faces[idx[:, 0], idx[:, 1], idx[:, 2]]


class StartSplat:
    """The surface cells of a bake, splatted per camera into start distances."""

    def __init__(self, grid: GridSpec, occ: torch.Tensor):
        centres, faces = surface_cells(grid, occ.cpu())
        # planes (one row per coordinate, per face): every per-frame operation below is
        # one long loop over the cells
        self.centres = centres.t().contiguous().to(occ.device)  # [3, K]
        self.faces = faces.t().contiguous().to(occ.device)  # [6, K]: -x, +x, -y, +y, -z, +z
        self.half = grid.voxel / 2
        self.radius = grid.voxel * math.sqrt(3) / 2  # a cell lies inside this sphere about its centre
        self.occ, self.lo, self.voxel = occ, grid.lo, grid.voxel
        # the eye's cell is looked up on the host: on a GPU one element read is a sync
        self._occ_host = occ.cpu()

    def to(self, device) -> "StartSplat":
        out = object.__new__(StartSplat)
        out.__dict__.update({k: (v.to(device) if torch.is_tensor(v) and k != "_occ_host" else v)
                             for k, v in self.__dict__.items()})
        return out

    def eye_in_solid(self, cam: Camera) -> bool:
        """Whether cam's eye lies in an occupied cell (no splat: its rays start inside)."""
        cell = [math.floor((float(e) - lo) / self.voxel) for e, lo in zip(cam.c2w[:3, 3], self.lo)]
        return all(0 <= i < n for i, n in zip(cell, self._occ_host.shape)) and bool(self._occ_host[tuple(cell)])

    def starts(self, cam: Camera) -> torch.Tensor | None:
        """[H * W] ray distance from the camera before which no ray of that pixel meets an
        occupied cell (inf: it meets none), or None when the eye is in an occupied cell
        (its rays start in one, not at a surface cell) or a surface cell straddles the
        camera's plane (its projection is unbounded): the caller traces instead."""
        dev, r = self.centres.device, self.radius
        if self.eye_in_solid(cam):
            return None
        c2w = torch.as_tensor(cam.c2w, dtype=torch.float32, device=dev)
        rel = self.centres - c2w[:3, 3, None]  # [3, K]
        # a cell can be entered from the eye only through an open face the eye lies in
        # front of (beyond the face's plane on its outer side; float slack: on it counts)
        edge = self.half * (1 - 1e-4)
        seen = self.faces[0] & (rel[0] > edge)
        for axis in range(3):
            if axis:
                seen |= self.faces[2 * axis] & (rel[axis] > edge)
            seen |= self.faces[2 * axis + 1] & (rel[axis] < -edge)
        rel = rel.index_select(1, torch.nonzero(seen).squeeze(1))
        x, y, z = c2w[:3, :3].t() @ rel  # camera frame: x right, y up, -z forward
        z = -z
        f, w, h = cam.focal, cam.width, cam.height
        # a sphere across the camera's plane has no bounded projection; it matters only
        # where a ray of the view could reach it: within the frustum's width at its depth
        straddle = z.abs() <= r * 1.01
        reach = z.abs() + r
        if bool((straddle & (x.abs() - r <= reach * (w / 2 / f) + 1e-6)
                 & (y.abs() - r <= reach * (h / 2 / f) + 1e-6)).any()):
            return None
        # the start: the eye's distance to the nearest point of the cell (tighter than
        # to its bounding sphere, which the projected bounds below use); cells behind the
        # eye or across its plane (out of view, above) keep meaningless boxes and an
        # infinite start
        gap = (rel.abs() - self.half).clamp_(min=0)
        start = torch.where(z > r * 1.01, (gap * gap).sum(0).sqrt_(), math.inf)
        z = z.clamp_min(2 * r)
        # exact bounds of a sphere's projection along each image axis: the tangent lines
        # from the eye in the x-z and y-z planes
        zz = z * z - r * r
        k = f / zz
        sx = torch.sqrt(x * x + zz).mul_(r)
        sy = torch.sqrt(y * y + zz).mul_(r)
        xz, yz = x * z, y * z
        # pixels whose centres (i + 0.5) fall inside the bounds, as blocks of BLOCK pixels
        lo = 0.5 + EDGE_SLACK_PX
        i0 = torch.ceil((xz - sx) * k + (w / 2 - lo)).div_(BLOCK).floor_().clamp_(min=0)
        i1 = torch.floor(((xz + sx) * k + (w / 2 - 0.5 + EDGE_SLACK_PX)) / BLOCK)
        j0 = torch.ceil((-yz - sy) * k + (h / 2 - lo)).div_(BLOCK).floor_().clamp_(min=0)
        j1 = torch.floor(((-yz + sy) * k + (h / 2 - 0.5 + EDGE_SLACK_PX)) / BLOCK)
        wb, hb = -(-w // BLOCK), -(-h // BLOCK)
        nw = i1.clamp_(max=wb - 1).sub_(i0).add_(1)
        nh = j1.clamp_(max=hb - 1).sub_(j0).add_(1)
        # cells whose box misses the image get an infinite start too
        start = torch.where((nw > 0) & (nh > 0), start, math.inf)
        blocks = torch.full((hb * wb,), math.inf, device=dev)
        # a dense [SIDE, SIDE, K] block of candidate blocks per cell (cells innermost: the
        # broadcast sums run long loops, where [K, SIDE, SIDE] ran 3-wide ones at a third
        # of the speed); offsets past a cell's box repeat its last row / column, harmless
        # under a minimum
        steps = torch.arange(SIDE, device=dev)[:, None]
        dx = torch.minimum(steps, (nw - 1).clamp_(min=0).long()).add_(i0.long())
        dy = torch.minimum(steps, (nh - 1).clamp_(min=0).long()).add_(j0.long()).mul_(wb)
        idx = torch.add(dy[:, None], dx[None]).view(-1).clamp_(0, hb * wb - 1)
        blocks.scatter_reduce_(0, idx, start.repeat(SIDE * SIDE), "amin")
        # (start < inf: isfinite is several whole-array passes)
        big = torch.nonzero(((nw > SIDE) | (nh > SIDE)) & (start < math.inf)).squeeze(1)
        if big.numel():  # cells nearer the camera than SIDE blocks allow
            _splat_boxes(blocks, wb, *(v.index_select(0, big).long() for v in (i0, j0, nw, nh)),
                         start.index_select(0, big))
        full = blocks.view(hb, 1, wb, 1).expand(hb, BLOCK, wb, BLOCK).reshape(hb * BLOCK, wb * BLOCK)
        return full[:h, :w].reshape(-1)


BLOCK = 2  # pixels per side of a splat block: a cell covers 1-4 of them at 256 px
SIDE = 3  # blocks per side splatted densely for every cell; larger boxes also take the general path


def _splat_boxes(out: torch.Tensor, w: int, i0, j0, nw, nh, start) -> None:
    """The general splat for boxes of any size (cells near the camera): one entry per
    (cell, covered pixel), its column and row from its rank within the cell."""
    count = nw * nh
    total = int(count.sum())
    dev = out.device
    cell = torch.repeat_interleave(torch.arange(count.shape[0], device=dev), count)
    first = torch.cumsum(count, 0) - count
    rank = torch.arange(total, device=dev) - first.index_select(0, cell)
    cw = nw.index_select(0, cell)
    col = i0.index_select(0, cell) + rank % cw
    row = j0.index_select(0, cell) + torch.div(rank, cw, rounding_mode="floor")
    out.scatter_reduce_(0, row * w + col, start.index_select(0, cell), "amin")
