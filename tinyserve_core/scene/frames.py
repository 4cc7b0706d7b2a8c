"""The bake's interactive frames (motion and bake quality), built for few and cheap
tensor operations on one CPU thread, where each operation costs a few microseconds of
dispatch and a gather through `grid_sample` about 80 ns a point:

* every ray starts at its pixel's splatted start distance (`splat`), just before the
  first occupied cell it could meet, so the first round needs no sphere tracing, and rays
  that meet no occupied cell are background at once;
* the eight corners of every occupied cell are precomputed as one column of a table (raw
  density, colour), so a sample in an occupied cell is one gather and three lerps, and a
  sample in an empty cell maps to a sentinel column and is never evaluated (packed);
* a window's samples are laid out sample-major with the rays innermost, and points as
  three coordinate planes: every operation is then one long vectorised loop, several
  times cheaper on one thread than the same work on [N, 3] or [N, 8, 3] rows;
* only rays still transparent after a window go on, sphere tracing (`interactive._trace`)
  to their next occupied cell as the every-pixel renderer does.

The every-pixel frame (`Bake.render(adaptive=False)`), the reference the fast frame is
measured against, and the full-quality renderer stay on `interactive.render_fast`.
"""

from __future__ import annotations

import functools

import torch

from .adaptive import render_pixels
from .camera import Camera
from .field import GridSpec
from .interactive import EmptySpace, _trace
from .splat import StartSplat
from .volume import slab_bounds

AIR = -1.0e4  # raw density of the sentinel row: softplus gives exactly 0
# window lengths in voxels: the first, from a ray's splatted start (up to about a voxel
# early), covers the way from the first occupied cell to an opaque surface for about 85%
# of rays (3.6 voxels at the median, 4.3 at the 75th percentile, 13 at the 90th in the
# room); the rays it leaves go on, tracing, with windows as long as the traced renderer's
FIRST_WINDOW = 7.0
WINDOW = 8.0
TAIL_SAMPLES = 1 << 15  # samples of one window for the last rays (below)
PREVIEW_EPS = 0.03  # samples below this weight take no colour lookup (bake.PREVIEW_WEIGHT_EPS)
# classes kept per occupied cell for a frame's labels: a cell's corners mix at most two or
# three objects (and the background), the rest of a softmax is a faint tail
CLASSES_PER_CELL = 4


class CellTable:
    """Per occupied cell (occ [X-1, Y-1, Z-1]) its 8 corners' raw density as planes
    [8, K + 1] and colour as rows [K + 1, 24] (corner-major: corners z-major, then y, then
    x, as `trilinear_rows`), and the few most probable classes of those corners; cell K is
    the sentinel every empty cell maps to (no density, no colour, no classes)."""

    def __init__(self, grid: GridSpec, occ: torch.Tensor, density: torch.Tensor, colour: torch.Tensor,
                 probs: torch.Tensor):
        nx, ny, _ = grid.shape
        _, cy, cz = occ.shape
        cells = torch.nonzero(occ.reshape(-1)).squeeze(1)
        k = cells.numel()
        ix = torch.div(cells, cy * cz, rounding_mode="floor")
        iy = torch.div(cells, cz, rounding_mode="floor") % cy
        iz = cells % cz
        base = (iz * ny + iy) * nx + ix
        offsets = torch.tensor([(dz * ny + dy) * nx + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
                               device=occ.device)
        corners = (base[:, None] + offsets).view(-1)
        dev = density.device
        # density as planes (corner major, cells innermost): a gather along the cells gives
        # planes that the blend reads in long contiguous loops; colour, read only for the
        # few weighted samples, as rows (one 96-byte read per sample, then transposed)
        self.density = torch.cat([density.reshape(-1).index_select(0, corners).view(k, 8),
                                  torch.full((1, 8), AIR, device=dev)]).t().contiguous()
        self.colour = torch.cat([colour.index_select(0, corners).view(k, 24), torch.zeros(1, 24, device=dev)])
        # int32: the table every sample reads stays half the size in cache
        self.row = torch.full((occ.numel(),), k, dtype=torch.int32, device=dev)
        self.row[cells] = torch.arange(k, dtype=torch.int32, device=dev)
        self.voxel, self.lo, self.hi = grid.voxel, grid.lo, grid.hi
        # a point's cell, in cell units: clamped just inside the grid, flat index as
        # x * stride_x + y * stride_y + z, exact in float32 below 2^24 corners (else float64)
        self.top = tuple(float(v) - 1e-3 for v in occ.shape)
        self.stride_x, self.stride_y = float(cy * cz), float(cz)
        self.wide = nx * ny * grid.shape[2] >= (1 << 24)
        self._sx, self._sy = torch.tensor(self.stride_x, device=dev), torch.tensor(self.stride_y, device=dev)
        # classes are read once per ray, and a cell's corners mix only a few classes: per
        # cell the CLASSES_PER_CELL classes with the most probability over its 8 corners,
        # as rows [K + 1, 8 * M] of those corners' probabilities and [K + 1, M] of the
        # class ids. A lookup gathers 8 * M values rather than 8 * C (C = 28 in the
        # apartment, where the full rows cost 25 ms a frame), and as one row per ray (two
        # cache lines) where planes cost a cache miss per value
        c = probs.shape[1]
        m = min(CLASSES_PER_CELL, c)
        by_corner = corners.view(k, 8).t()
        total = torch.zeros(k, c, device=dev)
        for j in range(8):
            total += probs.index_select(0, by_corner[j])
        ids = total.topk(m, 1).indices  # [K, M]
        kept = torch.stack([probs.index_select(0, by_corner[j]).gather(1, ids) for j in range(8)])  # [8, K, M]
        self.class_ids = torch.cat([ids, torch.zeros(1, m, dtype=ids.dtype, device=dev)])
        self.class_corners = torch.cat([kept.permute(1, 0, 2).reshape(k, 8 * m), torch.zeros(1, 8 * m, device=dev)])
        self.num_classes = c

    def cells(self, g: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Planes of points g (x, y, z in cell units, clamped in place into the grid) ->
        planes of their cells' lower corners and the cells' flat indices."""
        c = [v.clamp_(0, top).floor() for v, top in zip(g, self.top)]
        if self.wide:
            c = [v.double() for v in c]
        flat = torch.addcmul(c[2], c[1], torch.tensor(self.stride_y, dtype=c[0].dtype, device=c[0].device))
        return c, flat.addcmul_(c[0], torch.tensor(self.stride_x, dtype=c[0].dtype, device=c[0].device)).long()

    def flat_cells(self, g: torch.Tensor) -> torch.Tensor:
        """Flat cell indices [N] of points g [3, N] in cell units (clamped in place into the
        grid): `cells` on one stacked tensor, a few whole-array operations rather than
        three per coordinate."""
        for v, top in zip(g, self.top):  # scalar bounds: a tensor-bound clamp is 6x slower
            v.clamp_(0, top)
        c = g.floor()
        if self.wide:
            c = c.double()
        return torch.addcmul(c[2], c[1], self._sy.to(c.dtype)).addcmul_(c[0], self._sx.to(c.dtype)).long()

    def class_probs(self, g: torch.Tensor) -> torch.Tensor:
        """Class distribution [N, C] at points g [N, 3] in cell units: trilinear over the
        cell's CLASSES_PER_CELL most probable classes, normalised over them (the other
        classes read 0); zero outside occupied cells."""
        return self.class_probs_planes(g.t().contiguous())

    def class_probs_planes(self, g: torch.Tensor) -> torch.Tensor:
        """`class_probs` of points given as planes g [3, N] (clamped in place)."""
        flat = self.flat_cells(g)
        col = self.row.index_select(0, flat).long()
        m = self.class_ids.shape[1]
        # rows gathered, then planes [8, M, N] for the blend's long loops
        rows = self.class_corners.index_select(0, col).t().contiguous().view(8, m, -1)
        p = lerp_planes(rows, g.frac_()).clamp_min_(0)  # [M, N]
        p = p.div_(p.sum(0).clamp_min_(1e-6)).t()
        out = torch.zeros(flat.numel(), self.num_classes, device=p.device)
        return out.scatter_(1, self.class_ids.index_select(0, col), p)

    def to(self, device) -> "CellTable":
        out = object.__new__(CellTable)
        out.__dict__.update({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()})
        return out


def lerp_planes(rows: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Trilinear blend of corner planes [8, ...] (corners z-major, then y, then x; points
    along the dimension f broadcasts over) at fractions f [3, ...] (x, y, z): three lerps,
    x then y then z."""
    fx, fy, fz = f
    a = torch.lerp(rows[0::2], rows[1::2], fx)
    b = torch.lerp(a[0::2], a[1::2], fy)
    return torch.lerp(b[0], b[1], fz)


@torch.no_grad()
def render_cells(table: CellTable, space: EmptySpace, o: torch.Tensor, d: torch.Tensor, start: torch.Tensor,
                 near: torch.Tensor, far: torch.Tensor, step: float, background, first_window: float = FIRST_WINDOW,
                 window: float = WINDOW, rounds: int = 8, max_trace: int = 16, t_stop: float = 0.02,
                 app_eps: float = PREVIEW_EPS, tail_samples: int = TAIL_SAMPLES) -> dict[str, torch.Tensor]:
    """rgb [N,3], depth [N], probs [N,K], acc [N], as `interactive.render_fast` gives for
    a preview frame (colour from samples above app_eps, their ray's dropped weight shared
    among them; classes read once per ray at its highest-weight sample), for rays that
    start at `start` (no earlier than near) rather than being traced there.

    A window's samples are laid out [W, A] (sample-major, rays innermost) and points as
    three planes, so every operation runs one long loop over the rays rather than many
    3-wide ones, which on one CPU thread cost several times more."""
    dev, n = d.device, d.shape[0]
    # a camera's rays share one eye (o expanded, stride 0): its position broadcasts
    # instead of being gathered for every ray of every round and tracing step
    shared = o.shape[0] == 1 or o.stride(0) == 0
    og, dg = space.to_grid(o[:1] if shared else o), d / table.voxel  # rows, for the tracer
    og_p, dg_p = og.t().contiguous(), dg.t().contiguous()  # planes [3, 1 | N], [3, N]
    t = torch.maximum(start, near)
    trans = torch.ones(n, device=dev)
    rgb, depth = torch.zeros(3, n, device=dev), torch.zeros(n, device=dev)
    peak_w, peak_t = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    active = torch.nonzero(t < far).squeeze(1)
    air = table.density.shape[1] - 1
    for r in range(rounds):
        if r:
            _trace(space, og, dg, t, far, active, max_trace)
            active = active[t.index_select(0, active) < far.index_select(0, active)]
        a = active.numel()
        if a == 0:
            break
        ta, fa, tr0 = (x.index_select(0, active) for x in (t, far, trans))
        win = max(1, round((first_window if r == 0 else window) * table.voxel / step))
        if r and a < tail_samples // win:
            # the last few rays (a few hundred of 20,000 after the third round) cost a
            # round's fixed dozens of operations each time: one long window instead,
            # to their far bound within tail_samples samples in all
            win = max(win, min(tail_samples // a, int(float((fa - ta).max()) / step) + 1))
        ts = ta + _offsets(win, step, dev)  # [W, A]
        oa = og_p if shared else og_p.index_select(1, active)
        # the window's points as one [3, W, A] tensor (coordinate planes, rays innermost)
        g = torch.addcmul(oa[:, None], ts, dg_p.index_select(1, active)[:, None]).view(3, -1)
        row = table.row.index_select(0, table.flat_cells(g))
        # only samples in occupied cells are evaluated (packed)
        solid = torch.nonzero((row < air) & (ts < fa).view(-1)).squeeze(1)
        # fractions within the cell of the packed samples only (g is clamped into the grid,
        # so >= 0, and frac is g minus its cell's corner)
        f = g.index_select(1, solid).frac_()  # [3, S]
        rows = row.index_select(0, solid).long()
        raw = lerp_planes(table.density.index_select(1, rows), f)
        tau = torch.zeros(win * a, device=dev).index_copy_(
            0, solid, torch.nn.functional.softplus(raw).mul_(step / table.voxel)).view(win, a)
        # transmittance after each sample, e[k] = exp(-sum tau[..k]); a sample's weight is
        # what it takes of the transmittance, e[k - 1] - e[k] (four whole-window passes
        # fewer than tr * (1 - exp(-tau)))
        e = torch.cumsum(tau, 0).neg_().exp_()
        w = torch.empty_like(e)
        torch.sub(e[:-1], e[1:], out=w[1:])
        w[0].copy_(e[0]).neg_().add_(1.0)
        w.mul_(tr0)
        ws = w.view(-1).index_select(0, solid)
        live = torch.nonzero(ws > app_eps).squeeze(1)
        ray_of = solid.index_select(0, live).remainder_(a)
        lw = ws.index_select(0, live)
        # the dropped weight goes to the kept samples of the ray
        kept = torch.zeros(a, device=dev).index_add_(0, ray_of, lw)
        lw = lw * (w.sum(0) / kept.clamp_min(1e-8)).index_select(0, ray_of)
        # a live sample's colour corners as one row (96 bytes), then planes for the blend:
        # about 10% faster than 24 gathers from planes, a cache miss each
        cols = table.colour.index_select(0, rows.index_select(0, live)).t().contiguous().view(8, 3, -1)
        rgb.index_add_(1, active.index_select(0, ray_of), lerp_planes(cols, f.index_select(1, live)).mul_(lw))
        wmax, arg = w.max(0)
        pw = peak_w.index_select(0, active)
        better = wmax > pw
        peak_w.index_copy_(0, active, torch.where(better, wmax, pw))
        peak_t.index_copy_(0, active, torch.where(better, ts.gather(0, arg[None])[0], peak_t.index_select(0, active)))
        depth.index_add_(0, active, (w * ts).sum(0))
        tr_end = e[-1] * tr0
        trans.index_copy_(0, active, tr_end)
        ta = ta + win * step
        t.index_copy_(0, active, ta)
        active = active[(tr_end > t_stop) & (ta < fa)]
    acc = 1 - trans
    probs = torch.zeros(n, table.num_classes, device=dev)
    hit = torch.nonzero(peak_w > 0).squeeze(1)
    g_peak = torch.addcmul(og_p if shared else og_p.index_select(1, hit), peak_t.index_select(0, hit),
                           dg_p.index_select(1, hit))  # planes [3, H]
    probs.index_copy_(0, hit, table.class_probs_planes(g_peak).mul_(acc.index_select(0, hit)[:, None]))
    probs[:, 0] += trans
    depth += trans * far.clamp_min(near)
    rgb = rgb.t() + trans[:, None] * torch.tensor(background, dtype=rgb.dtype, device=dev)
    return {"rgb": rgb, "depth": depth, "probs": probs, "acc": acc}


@functools.lru_cache(maxsize=32)
def _offsets(win: int, step: float, device: torch.device) -> torch.Tensor:
    """Sample offsets [W, 1] from a window's start: the middles of its W steps."""
    return ((torch.arange(win, dtype=torch.float32) + 0.5) * step)[:, None].to(device)


@torch.no_grad()
def render_frame(table: CellTable, splat: StartSplat, space: EmptySpace, cam: Camera, step: float, background,
                 device: torch.device, levels: int = 1, colour_edges: bool = True, native=None,
                 **march) -> dict[str, torch.Tensor] | None:
    """An adaptive frame (`adaptive.render_pixels`; levels=0: every pixel cast) with
    splatted starts; None when the camera sits among surface cells (no bounded splat: the
    caller traces from the eye). With `native` (a `native_frames.NativeFrames`) the rays
    are cast by the compiled per-ray loop, else by `render_cells`."""
    start = splat.starts(cam)
    if start is None:
        return None
    if native is not None:
        def cast_native(idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
            return native.render(cam, start, idx, step, background, **march)

        if levels == 0:  # every pixel in one call: no index list to build
            return cast_native(None)
        return render_pixels(cast_native, cam, device, table.voxel, levels, colour_edges)
    o, d = frame_rays(cam, device)
    near, far = eye_box_bounds(o[0], d.t().contiguous(), table.lo, table.hi)  # every pixel's, once

    def cast(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        di = d.index_select(0, idx)
        oi = o[:1].expand_as(di)  # one eye: never copied per ray (render_cells broadcasts it)
        return render_cells(table, space, oi, di, start.index_select(0, idx), near.index_select(0, idx),
                            far.index_select(0, idx), step, background, **march)

    return render_pixels(cast, cam, device, table.voxel, levels, colour_edges)


def eye_box_bounds(eye: torch.Tensor, d: torch.Tensor, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """`volume.ray_aabb` (entry and exit distances through the box lo..hi) for rays from
    one eye [3] with directions as planes d [3, N]: the eye's offsets to the faces are
    three scalars, and each axis a long loop over the rays (3-wide row reductions took
    1.2 ms for 16,000 rays on one thread)."""
    to_lo = torch.tensor(lo, dtype=d.dtype, device=d.device) - eye
    to_hi = torch.tensor(hi, dtype=d.dtype, device=d.device) - eye
    return slab_bounds(to_lo, to_hi, d)


@functools.lru_cache(maxsize=4)
def _camera_dirs(width: int, height: int, focal: float) -> torch.Tensor:
    """Unit ray directions [H * W, 3] in the camera frame, row-major (as Camera.pixel_rays)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    dirs = torch.stack([(xs - width / 2) / focal, -(ys - height / 2) / focal, -torch.ones_like(xs)], -1)
    return (dirs / dirs.norm(dim=-1, keepdim=True)).view(-1, 3)


def frame_rays(cam: Camera, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions [H * W, 3] of cam: the camera-frame directions are cached
    per image size, so a frame's rays are one rotation (a rotation keeps them unit)."""
    rot = torch.as_tensor(cam.c2w[:3, :3], dtype=torch.float32)
    d = (_camera_dirs(cam.width, cam.height, cam.focal) @ rot.T).to(device)
    o = torch.as_tensor(cam.c2w[:3, 3], dtype=torch.float32, device=device).expand_as(d)
    return o, d
