"""Training the semantic field from analytic views: data, space carving, the loop.

The occupancy grid starts from space carving of the training depth maps (cells some
training ray crossed in front of its first hit are empty; one-cell dilation keeps grazed
boundaries) and is then refreshed from the learnt density every few steps, so the
field is only ever evaluated near surfaces.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .analytic import cast
from .camera import HELDOUT_RINGS, TRAIN_VIEW_SETS, Camera, camera_ring
from .field import MAX_GRID_CORNERS, GridSpec, SemanticGridField
from .metrics import evaluate_views, psnr
from .spec import SceneSpec
from .weights import corner_mask
from .volume import composite, march, ray_aabb, render_chunked, render_rays


@dataclass(frozen=True)
class TrainConfig:
    size: int = 128  # training image side, pixels
    iters: int = 1500
    batch_rays: int = 4096
    voxel: float = 0.025
    feat_dim: int = 8
    hidden: int = 32
    lr_grid: float = 0.1
    lr_mlp: float = 5e-3
    semantic_weight: float = 0.04
    depth_weight: float = 0.02
    occ_every: int = 16
    occ_warmup: int = 64
    seed: int = 0
    views: str = "standard"  # training camera set: a key of camera.TRAIN_VIEW_SETS

    def validate(self) -> "TrainConfig":
        for name in ("size", "iters", "batch_rays", "feat_dim", "hidden", "occ_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("feat_dim", "hidden"):  # the weights loader's bound
            if getattr(self, name) > 1024:
                raise ConfigError(name, f"must be <= 1024, got {getattr(self, name)}")
        if not 0.005 <= self.voxel <= 0.2:
            raise ConfigError("voxel", f"must lie in [0.005, 0.2] metres, got {self.voxel}")
        if self.views not in TRAIN_VIEW_SETS:
            raise ConfigError("views", f"must be one of {', '.join(TRAIN_VIEW_SETS)}, got {self.views!r}")
        return self


REPORT_EVERY = 10  # steps between the host's reads of loss and running PSNR on a GPU (a sync)


@dataclass
class Progress:
    """What a progress bar or the GUI shows; `preview` is an RGB image every preview_every
    steps; loss and psnr are refreshed every step on the CPU, every REPORT_EVERY steps and
    at the last on a GPU."""
    step: int
    total: int
    loss: float
    psnr: float  # running PSNR of training batches, dB
    elapsed: float
    preview: np.ndarray | None = None


@dataclass
class Views:
    cams: list[Camera]
    o: torch.Tensor
    d: torch.Tensor
    rgb: torch.Tensor
    label: torch.Tensor
    depth: torch.Tensor


def make_views(spec: SceneSpec, rings, size: int, device: str | torch.device = "cpu") -> Views:
    """The cameras' rays and analytic ground truth, cast on `device` (on a GPU the dense
    view set's 2.2M rays take well under a second instead of ~12 s on 16 CPU cores)."""
    cams = camera_ring(spec.camera_target, spec.camera_distance, rings, size)
    rays = [c.rays() for c in cams]
    dev = torch.device(device)
    o, d = torch.cat([r[0] for r in rays]).to(dev), torch.cat([r[1] for r in rays]).to(dev)
    h = cast(spec, o, d, chunk=1 << 15 if dev.type == "cpu" else 1 << 19)
    return Views(cams, o, d, h.rgb, h.label, h.depth)


def step_size(grid: GridSpec) -> float:
    return grid.voxel / 2


def carve(grid: GridSpec, views: Views, stride: int = 2) -> torch.Tensor:
    """Cells [X-1, Y-1, Z-1] not seen empty by any training ray, dilated by one cell; on
    the views' device, returned on the CPU."""
    cells = tuple(n - 1 for n in grid.shape)
    dev = views.o.device
    seen_empty = torch.zeros(math.prod(cells), dtype=torch.bool, device=dev)
    sel = torch.arange(0, views.o.shape[0], stride, device=dev)
    margin = 2 * grid.voxel
    for chunk in sel.split(8192 if dev.type == "cpu" else 1 << 17):
        o, d, depth = views.o[chunk], views.d[chunk], views.depth[chunk]
        near, far = ray_aabb(o, d, grid.lo, grid.hi)
        stop = torch.minimum(far, depth - margin)
        s = max(1, math.ceil(float((stop - near).max().clamp_min(0)) / grid.voxel))
        t = near[:, None] + torch.arange(s, dtype=o.dtype, device=dev)[None] * grid.voxel
        ray, k = (t < stop[:, None]).nonzero(as_tuple=True)
        idx = grid.cell_index(o[ray] + t[ray, k, None] * d[ray])
        flat = (idx[:, 0] * cells[1] + idx[:, 1]) * cells[2] + idx[:, 2]
        seen_empty[flat] = True
    keep = (~seen_empty).view(cells).float()
    return (F.max_pool3d(keep[None, None], 3, stride=1, padding=1)[0, 0] > 0).cpu()


def training_grid(spec: SceneSpec, cfg: TrainConfig) -> GridSpec:
    """The grid over the scene's bounds at cfg.voxel, refused when it cannot fit in memory
    (callers check it before a progress bar starts, so the error stays one line)."""
    grid = GridSpec(spec.bounds[0], spec.bounds[1], cfg.voxel)
    corners = math.prod(grid.shape)
    if corners > MAX_GRID_CORNERS:
        raise ConfigError("voxel", f"{cfg.voxel} m over the bounds of scene {spec.name!r} is a grid of "
                                   f"{corners:,} corners, over the limit of {MAX_GRID_CORNERS:,}; "
                                   "use a larger voxel or smaller bounds")
    return grid


def train_field(spec: SceneSpec, cfg: TrainConfig = TrainConfig(),
                callback: Callable[[Progress], bool | None] | None = None, preview_every: int = 0,
                views: Views | None = None, device: str = "cpu") -> tuple[SemanticGridField, torch.Tensor, dict]:
    """Train; `callback` gets a Progress each step and may return True to cancel (the
    partially trained field is still returned). Returns (field, occupancy, stats), on the CPU."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    grid = training_grid(spec, cfg)
    t0 = time.perf_counter()
    views = views or make_views(spec, TRAIN_VIEW_SETS[cfg.views], cfg.size, dev)
    t_views = time.perf_counter()
    carved = carve(grid, views)
    field = SemanticGridField(grid, len(spec.labels), cfg.feat_dim, cfg.hidden, cfg.seed,
                              active=corner_mask(carved)).to(dev)
    carved = carved.to(dev)
    cams = views.cams
    views = Views(cams, *(getattr(views, k).to(dev) for k in ("o", "d", "rgb", "label", "depth")))
    occ = carved.clone()
    opt = torch.optim.Adam([
        {"params": [field.density, field.features], "lr": cfg.lr_grid},
        {"params": field.mlp.parameters(), "lr": cfg.lr_mlp},
    ], betas=(0.9, 0.99), eps=1e-15, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 ** (i / cfg.iters))
    hit_all = torch.isfinite(views.depth)
    step = step_size(grid)
    n_rays = views.o.shape[0]
    mse_ema, cancelled, stats = None, False, {}
    t_loop = time.perf_counter()
    for it in range(cfg.iters):
        idx = torch.randint(n_rays, (cfg.batch_rays,), generator=gen, device=dev)
        out = render_rays(field, occ, views.o[idx], views.d[idx], step, spec.background, gen)
        mse = F.mse_loss(out["rgb"], views.rgb[idx])
        nll = F.nll_loss(torch.log(out["probs"].clamp_min(1e-6)), views.label[idx])
        # masked, not indexed: a boolean index or hit.any() would wait for the GPU every step
        hit = hit_all[idx]
        depth_l1 = torch.where(hit, out["depth"] - views.depth[idx], 0).abs().sum() / hit.sum().clamp_min(1)
        loss = mse + cfg.semantic_weight * nll + cfg.depth_weight * depth_l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        # Before warm-up every carved cell is kept so surfaces can grow density first.
        if it + 1 >= cfg.occ_warmup and (it + 1) % cfg.occ_every == 0:
            occ = carved & field.occupancy()
        # the running MSE stays on the device; on a GPU the host reads it every REPORT_EVERY steps
        mse_ema = mse.detach().clone() if mse_ema is None else mse_ema.mul_(0.9).add_(mse.detach(), alpha=0.1)
        if dev.type == "cpu" or it == 0 or (it + 1) % REPORT_EVERY == 0 or it + 1 == cfg.iters:
            shown = (float(loss.detach()), psnr(float(mse_ema)))
        preview = None
        if callback is not None:
            if preview_every and (it + 1) % preview_every == 0:
                preview = render_view(field, occ, cams[0], spec.background)["rgb"]
            if callback(Progress(it + 1, cfg.iters, *shown, time.perf_counter() - t0, preview)):
                cancelled = True
                break
    t_prune = time.perf_counter()
    occ = visible_cells(field, carved & field.occupancy(), views, step)
    t_end = time.perf_counter()
    stats.update(train_seconds=t_end - t0, steps=it + 1, cancelled=cancelled,
                 seconds={"views": t_views - t0, "carve_and_setup": t_loop - t_views,
                          "steps": t_prune - t_loop, "prune": t_end - t_prune},
                 train_psnr=psnr(1.0 if mse_ema is None else float(mse_ema)), device=str(dev), config=asdict(cfg))
    return field.cpu(), occ.cpu(), stats


@torch.no_grad()
def visible_cells(field, occ: torch.Tensor, views: Views, step: float, min_weight: float = 1e-3,
                  chunk: int | None = None) -> torch.Tensor:
    """Prune to cells where some training ray puts compositing weight (Plenoxels-style):
    object interiors and unseen space go, so renders and the shipped weights stay small.
    Chunks of 16K rays on the CPU, 256K on a GPU (the dense 256 px views are 8.6M rays:
    525 small chunks were seconds of launches there)."""
    grid = field.grid
    chunk = chunk or (16384 if occ.device.type == "cpu" else 1 << 18)
    seen = torch.zeros(occ.numel(), device=occ.device)
    cells = occ.shape
    for i in range(0, views.o.shape[0], chunk):
        o, d = views.o[i:i + chunk], views.d[i:i + chunk]
        ray_idx, k, t, _, _, s = march(grid, occ, o, d, step)
        pts = o[ray_idx] + t[:, None] * d[ray_idx]
        w = composite(field.sigma(pts), ray_idx, k, o.shape[0], s, step)
        idx = grid.cell_index(pts)
        flat = (idx[:, 0] * cells[1] + idx[:, 1]) * cells[2] + idx[:, 2]
        seen.scatter_reduce_(0, flat, w, reduce="amax")
    keep = (seen >= min_weight).view(cells).float()
    return occ & (F.max_pool3d(keep[None, None], 3, stride=1, padding=1)[0, 0] > 0)


@torch.no_grad()
def render_view(field, occ: torch.Tensor, cam: Camera, background=(1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
    """Full-quality render of one camera: rgb, depth, probs as numpy [H, W, ...]."""
    dev = field.density.device
    o, d = (x.to(dev) for x in cam.rays())
    out = render_chunked(field, occ, o, d, step_size(field.grid), background)
    h, w = cam.height, cam.width
    out = {k: v.cpu() for k, v in out.items()}
    return {"rgb": out["rgb"].reshape(h, w, 3).clamp(0, 1).numpy(), "depth": out["depth"].reshape(h, w).numpy(),
            "probs": out["probs"].reshape(h, w, -1).numpy(), "acc": out["acc"].reshape(h, w).numpy()}


def heldout_views(spec: SceneSpec, size: int = 128) -> Views:
    return make_views(spec, HELDOUT_RINGS, size)


def evaluate_heldout(spec: SceneSpec, field: SemanticGridField, occ: torch.Tensor, size: int = 128) -> dict:
    """PSNR / SSIM / mIoU of full-quality renders of the held-out cameras."""
    from .bake import RenderResult

    def render(cam):
        r = render_view(field, occ, cam)
        return RenderResult(r["rgb"], r["depth"], r["probs"], r["acc"], cam)

    return evaluate_views(spec, render, size)
