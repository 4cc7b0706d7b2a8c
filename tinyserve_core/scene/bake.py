"""The bake: the trained field evaluated once at every grid corner (density, colour,
class distribution), so interactive frames need no MLP, and the representation the
planner, picking and object extents read from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import torch.nn.functional as F

from .camera import Camera
from .field import (EMPTY_DENSITY, GridSpec, SemanticGridField, density_activation,
                    occupancy_from_density, sample_grid, trilinear_rows)
from .adaptive import render_image
from .frames import CellTable, render_frame
from .interactive import EmptySpace, render_fast
from .native_frames import NativeFrames, native_frames
from .native_image import NativeImage, native_image
from .native_splat import NativeSplat, native_splat
from .splat import StartSplat
from .volume import WEIGHT_EPS
from .weights import corner_mask

BAKE_MIN_DENSITY = 0.02  # per voxel; below it a corner is air in the bake
PREVIEW_WEIGHT_EPS = 0.03
REFERENCE_SUBDIVIDE = 8  # samples per voxel of the reference frame (the frames take 1 or 2)
# adaptive refinement levels of the compiled frames, by device (0: every pixel cast)
COMPILED_LEVELS = {"cpu": 1, "cuda": 0}


@dataclass
class RenderResult:
    """One rendered view; images are numpy [H, W, ...]. Depth is ray distance (metres)."""
    rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]
    depth: np.ndarray  # float32 [H, W]
    probs: np.ndarray  # float32 [H, W, K] class distribution (0 = background)
    acc: np.ndarray  # float32 [H, W] opacity
    camera: Camera

    @property
    def label(self) -> np.ndarray:
        return self.probs.argmax(-1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(-1)

    @property
    def entropy(self) -> np.ndarray:
        p = np.clip(self.probs, 1e-8, 1.0)
        return -(p * np.log(p)).sum(-1)


@dataclass
class ObjectExtent:
    label: str
    centroid: tuple[float, float, float]
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    voxels: int


def as_result(out: dict[str, torch.Tensor], cam: Camera) -> RenderResult:
    """Rendered rays (on any device) as numpy images on the host."""
    h, w = cam.height, cam.width
    gpu = [v.device for v in out.values() if v.device.type == "cuda"]
    out = {k: _to_host(v) for k, v in out.items()}
    if gpu:  # the copies were queued without waiting: wait once for all of them
        torch.cuda.current_stream(gpu[0]).synchronize()
    return RenderResult(out["rgb"].clamp(0, 1).reshape(h, w, 3).numpy(), out["depth"].reshape(h, w).numpy(),
                        out["probs"].reshape(h, w, -1).numpy(), out["acc"].reshape(h, w).numpy(), cam)


def _to_host(v: torch.Tensor) -> torch.Tensor:
    """A GPU frame's output copied (queued, not waited for) into page-locked host memory
    (torch's caching host allocator):
    a 512 px frame's class distributions are ~15 MB, a few ms as a pageable copy and a
    fraction of one as a pinned copy."""
    if v.device.type != "cuda":
        return v
    host = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
    return host.copy_(v, non_blocking=True)


class Bake:
    def __init__(self, grid: GridSpec, labels: list[str], density: torch.Tensor, appearance: torch.Tensor,
                 occ: torch.Tensor, background=(1.0, 1.0, 1.0)):
        self.grid = grid
        self.labels = list(labels)
        self.num_classes = len(labels)
        self.density = density  # raw, [Z, Y, X]
        self.app = appearance  # [Z, Y, X, 3 + K]: colour then class probabilities (channels last)
        self.occ = occ  # cells [X-1, Y-1, Z-1]
        # contiguous split tables: a preview frame reads colour per sample, classes per ray
        flat = appearance.view(-1, appearance.shape[-1])
        self._colour, self._probs = flat[:, :3].contiguous(), flat[:, 3:].contiguous()
        self.space = EmptySpace(grid, occ)
        # the fast frame's tables: corner rows per occupied cell, surface cells to splat
        self.cells = CellTable(grid, occ, density, self._colour, self._probs)
        self.splat = StartSplat(grid, occ)
        zero = torch.zeros(1, 3, device=density.device)
        self._shift = grid.normalize(zero)[0]
        self._scale = grid.normalize(zero + 1)[0] - self._shift
        self.background = tuple(background)
        self._extents: dict[str, ObjectExtent] | None = None
        self._points: dict[str, np.ndarray] | None = None
        self._native: NativeFrames | None | bool = False  # False: not looked for yet
        self._image: NativeImage | None | bool = False
        self._splat: NativeSplat | None | bool = False

    def compiled(self) -> NativeFrames | None:
        """The compiled frame loop on this bake's device (built or loaded on the first
        frame, not at load time), or None: the torch frames."""
        if self._native is False:
            self._native = native_frames(self.cells, self.space)
        return self._native

    def compiled_image(self) -> NativeImage | None:
        """The whole adaptive frame in one compiled call (CPU only), or None."""
        if self._image is False:
            self._image = native_image(self.compiled(), self.splat)
        return self._image

    def compiled_splat(self) -> NativeSplat | None:
        """The compiled start splat on this bake's device, or None: the torch splat."""
        if self._splat is False:
            native = self.compiled()
            self._splat = native_splat(native.lib, self.splat) if native is not None else None
        return self._splat

    @property
    def device(self) -> torch.device:
        return self.density.device

    def to(self, device) -> "Bake":
        """A copy whose tables (and so whose frames) live on `device`; the read-outs below
        work from the host copy."""
        device = torch.device(device)
        if device == self.device:
            return self
        return Bake(self.grid, self.labels, self.density.to(device), self.app.to(device), self.occ.to(device),
                    self.background)

    @classmethod
    @torch.no_grad()
    def from_field(cls, field: SemanticGridField, occ: torch.Tensor, labels: list[str], background=(1.0, 1.0, 1.0),
                   min_density: float = BAKE_MIN_DENSITY) -> "Bake":
        """Evaluate the MLP once per kept corner. Faint density (thin fog in front of
        surfaces, invisible in renders) is cut, so the bake's occupancy hugs the surfaces
        and a frame composites a few samples per ray instead of dozens."""
        density = field.dense_density()
        density[F.softplus(density) < min_density] = EMPTY_DENSITY
        occ = occ & occupancy_from_density(density, min_density)
        keep = corner_mask(occ) & field.active
        h = field.mlp(field.features[field.corner_rows(keep)])
        app = torch.zeros(*keep.shape, 3 + field.num_classes)
        app[keep] = torch.cat([torch.sigmoid(h[:, :3]), torch.softmax(h[:, 3:], -1)], 1)
        return cls(field.grid, labels, density, app, occ, background)

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        # grid_sample's [-1, 1] coordinates as one fused multiply-add (the dearest lookup
        # of a frame: every sample in an occupied cell)
        coords = torch.addcmul(self._shift, x, self._scale)
        return density_activation(sample_grid(self.density[None], coords)[:, 0], self.grid.voxel)

    def appearance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = trilinear_rows(self.app.view(-1, self.app.shape[-1]), self.grid, x)
        return a[:, :3], self._normalized(a[:, 3:])

    def colour(self, x: torch.Tensor) -> torch.Tensor:
        return trilinear_rows(self._colour, self.grid, x)

    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalized(trilinear_rows(self._probs, self.grid, x))

    @staticmethod
    def _normalized(p: torch.Tensor) -> torch.Tensor:
        p = p.clamp_min(0)
        return p / p.sum(-1, keepdim=True).clamp_min(1e-6)

    def render(self, cam: Camera, preview: bool = True, coarse: bool = False, adaptive: bool = True) -> RenderResult:
        """A frame from the bake; preview=True drops the faintest samples' colour lookups
        and reads each pixel's classes at its peak sample (preview=False: every sample).
        coarse=True marches a whole voxel per sample instead of half and, adaptive, casts
        again only across label changes: about 34 dB from the bake frame at 256 px, for
        frames drawn while the camera moves. adaptive=True casts about 40% of the pixels
        and interpolates the rest (see `adaptive`), starting every ray at its splatted start
        distance (`frames`); False casts every pixel, traced from the eye, the reference the
        fast frame is measured by."""
        def rays(o, d):
            return self.render_rays(o, d, preview, coarse)

        if adaptive and preview:
            step = self.grid.voxel if coarse else self.grid.voxel / 2
            # the motion frame casts again only across label changes (object outlines),
            # interpolating colour and depth edges: 12% fewer rays, 34 dB from the bake
            # frame at 256 px (35 when it cast those too), labels the same
            image = self.compiled_image()
            if image is not None:  # splat, casts and refinement in one compiled call
                # None: the eye among surface cells, where no splat applies (the torch splat
                # would say so too, after projecting every cell): the traced frame below
                out = image.render(cam, step, self.background, levels=COMPILED_LEVELS["cpu"],
                                   colour_edges=not coarse)
            else:
                native = self.compiled()
                out = render_frame(self.cells, self.compiled_splat() or self.splat, self.space, cam, step,
                                   self.background, self.device,
                                   levels=COMPILED_LEVELS.get(self.device.type, 1) if native else 1,
                                   colour_edges=not coarse, native=native)
            if out is not None:
                return as_result(out, cam)
        if adaptive:
            return as_result(render_image(rays, cam, self.device, self.grid.voxel), cam)
        o, d = cam.rays()
        return as_result(rays(o.to(self.device), d.to(self.device)), cam)

    def render_reference(self, cam: Camera, subdivide: int = REFERENCE_SUBDIVIDE) -> RenderResult:
        """Every pixel, 1/subdivide of a voxel per sample (preview colour and peak labels as
        the fast frames): the finer quadrature both the every-pixel and the fast frame
        approximate, so their distances from it say how much of their difference from
        each other is one's error rather than the other's sampling."""
        o, d = cam.rays()
        out = render_fast(self, self.space, o.to(self.device), d.to(self.device), self.grid.voxel / subdivide,
                          self.background, window=5 * subdivide, app_eps=PREVIEW_WEIGHT_EPS,
                          peak_labels=True)
        return as_result(out, cam)

    def render_rays(self, o: torch.Tensor, d: torch.Tensor, preview: bool = True,
                    coarse: bool = False) -> dict[str, torch.Tensor]:
        step = self.grid.voxel if coarse else self.grid.voxel / 2
        return render_fast(self, self.space, o, d, step, self.background,
                           app_eps=PREVIEW_WEIGHT_EPS if preview else WEIGHT_EPS, peak_labels=preview)

    # ----- representation read-outs: points, occupancy, object extents -----
    @torch.no_grad()
    def corner_points(self, min_sigma: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid corners denser than min_sigma (1/m): xyz [N, 3], rgb [N, 3], label [N]."""
        sig = density_activation(self.density, self.grid.voxel)
        zyx = torch.nonzero(sig > min_sigma)
        xyz = torch.tensor(self.grid.lo) + zyx.flip(1).float() * self.grid.voxel
        a = self.app[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
        return xyz.numpy(), a[:, :3].numpy(), a[:, 3:].argmax(1).numpy()

    def density_grid(self) -> np.ndarray:
        """Density [X, Y, Z] (1/m) at the grid corners, e.g. for marching cubes."""
        return density_activation(self.density, self.grid.voxel).permute(2, 1, 0).numpy()

    def solid(self, min_sigma: float = 5.0) -> np.ndarray:
        """Corners [X, Y, Z] inside matter, the planner's obstacle map."""
        return self.density_grid() > min_sigma

    def object_points(self, min_sigma: float = 5.0) -> dict[str, np.ndarray]:
        """Per object, the solid corners it labels, kept to the largest 26-connected blob:
        corners never seen in training (inside solids, under the table) carry arbitrary
        labels, and those stray specks must not move a centroid or a planning goal."""
        if self._points is None:
            from scipy import ndimage

            xyz, _, lab = self.corner_points(min_sigma)
            idx = np.rint((xyz - np.array(self.grid.lo)) / self.grid.voxel).astype(int)
            vol = np.full(self.grid.shape, -1, dtype=np.int16)
            vol[tuple(idx.T)] = lab
            self._points = {}
            for k, name in enumerate(self.labels):
                if k == 0:
                    continue
                comp, n = ndimage.label(vol == k, structure=np.ones((3, 3, 3)))
                if n == 0:
                    self._points[name] = np.zeros((0, 3))
                    continue
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                self._points[name] = np.array(self.grid.lo) + np.argwhere(comp == sizes.argmax()) * self.grid.voxel
        return self._points

    def extents(self) -> dict[str, ObjectExtent]:
        """Per object, centroid and axis-aligned box of its solid corners."""
        if self._extents is None:
            self._extents = {}
            for name, pts in self.object_points().items():
                if len(pts):
                    self._extents[name] = ObjectExtent(name, tuple(map(float, pts.mean(0))), tuple(map(float, pts.min(0))),
                                                       tuple(map(float, pts.max(0))), int(len(pts)))
        return self._extents
