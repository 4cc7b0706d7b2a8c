"""The semantic radiance field: a dense voxel grid of density and features plus a tiny MLP
(DVGO-style), with an occupancy grid for empty-space skipping.

Density is post-activated (softplus after trilinear interpolation), which lets a voxel
grid carve sub-voxel sharp surfaces. Colour has no view-direction input because the
scene's Lambert shading is view-independent. The semantic head emits class logits
(Semantic-NeRF); class 0 is the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DENSITY_INIT = -6.0  # softplus(-6) per voxel: nearly transparent at the start
EMPTY_DENSITY = -10.0  # inactive corners: far below the occupancy threshold
OCC_THRESHOLD = 3e-3  # density per voxel (above the initial value) below which a cell is skipped
# Every grid corner costs about 20 bytes of dense bookkeeping (row index, masks, carving)
# before any parameter: 2^25 corners is ~0.7 GB, and the room at 7.5 mm voxels still fits.
MAX_GRID_CORNERS = 1 << 25


@dataclass(frozen=True)
class GridSpec:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    voxel: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of grid corners along (x, y, z)."""
        return tuple(int(round((h - l) / self.voxel)) + 1 for l, h in zip(self.lo, self.hi))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World points -> grid_sample coordinates in [-1, 1] (align_corners=True)."""
        lo = torch.tensor(self.lo, dtype=x.dtype, device=x.device)
        ext = torch.tensor([(n - 1) * self.voxel for n in self.shape], dtype=x.dtype, device=x.device)
        return (x - lo) / ext * 2 - 1

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """Integer (x, y, z) cell of each point, clamped into the grid."""
        lo = torch.tensor(self.lo, dtype=x.dtype, device=x.device)
        hi = torch.tensor(self.shape, dtype=torch.long, device=x.device) - 2
        idx = ((x - lo) / self.voxel).floor().long()
        return torch.minimum(idx.clamp_min(0), hi)


def sample_grid(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of a [C, Z, Y, X] grid at normalized coords [N, 3] -> [N, C]."""
    out = F.grid_sample(grid[None], coords.view(1, 1, 1, -1, 3), mode="bilinear", align_corners=True)
    return out.view(grid.shape[0], -1).T


def trilinear_rows(table: torch.Tensor, grid: GridSpec, x: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup in a channels-last table [Z*Y*X, C] -> [N, C]: each corner is one
    contiguous row, far friendlier to the cache than grid_sample's channel planes when C
    is large. The 8 corner rows come in one gather and are blended with one weighted sum,
    a dozen operations whatever N (interactive frames call this many times on few points)."""
    nx, ny, nz = grid.shape
    g = (x - torch.tensor(grid.lo, dtype=x.dtype, device=x.device)) / grid.voxel
    top = torch.tensor([nx - 2, ny - 2, nz - 2], dtype=x.dtype, device=x.device)
    i0 = torch.minimum(g.floor().clamp_min_(0), top)
    f = (g - i0).clamp_(0, 1)
    base = (i0.long() * torch.tensor([1, nx, nx * ny], device=x.device)).sum(1)  # exact for any grid size
    offsets = torch.tensor([(dz * ny + dy) * nx + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
                           device=x.device)
    rows = table.index_select(0, (base[:, None] + offsets).view(-1)).view(-1, 8, table.shape[1])
    w1 = torch.stack([1 - f, f], 1)  # [N, 2 (lo/hi), 3 (x, y, z)]
    w = (w1[:, :, None, None, 2] * w1[:, None, :, None, 1] * w1[:, None, None, :, 0]).view(-1, 8, 1)
    return (rows * w).sum(1)


def density_activation(raw: torch.Tensor, voxel: float) -> torch.Tensor:
    return F.softplus(raw) / voxel


def occupancy_from_density(raw: torch.Tensor, threshold: float = OCC_THRESHOLD) -> torch.Tensor:
    """Cells [X-1, Y-1, Z-1] whose density may exceed the threshold anywhere inside.

    Interpolation never exceeds the largest of a cell's 8 corners and softplus is
    monotonic, so max-pooling the corners gives an exact upper bound: no occupied
    point is ever skipped."""
    corners = F.max_pool3d(raw[None, None], kernel_size=2, stride=1)[0, 0]  # [Z-1, Y-1, X-1]
    return (F.softplus(corners) > threshold).permute(2, 1, 0).contiguous()


class SemanticGridField(nn.Module):
    """Parameters live only at `active` grid corners (a sparse voxel grid, as in
    Plenoxels): every other corner is air (EMPTY_DENSITY, zero features). Training
    activates the corners of the space-carved cells, about a sixth of the grid, so
    gradients and optimizer state cover only the space that can hold a surface."""

    def __init__(self, grid: GridSpec, num_classes: int, feat_dim: int = 8, hidden: int = 32, seed: int = 0,
                 active: torch.Tensor | None = None):
        super().__init__()
        self.grid = grid
        self.num_classes = num_classes
        nx, ny, nz = grid.shape
        if active is None:
            active = torch.ones(nz, ny, nx, dtype=torch.bool)
        m = int(active.sum())
        rows = torch.full((nz, ny, nx), m, dtype=torch.long)  # row m is the air sentinel
        rows[active] = torch.arange(m)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("active", active.clone(), persistent=False)
        g = torch.Generator().manual_seed(seed)
        self.density = nn.Parameter(torch.full((m,), DENSITY_INIT))
        self.features = nn.Parameter(torch.randn(m, feat_dim, generator=g) * 0.1)
        self.mlp = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU(), nn.Linear(hidden, 3 + num_classes))
        with torch.no_grad():
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * (1.0 / layer.in_features) ** 0.5)
                    layer.bias.zero_()

    def _corners(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows [N, 8] of each point's cell corners and their trilinear weights,
        both ordered z-major, then y, then x."""
        nx, ny, nz = self.grid.shape
        g = (x - torch.tensor(self.grid.lo, dtype=x.dtype, device=x.device)) / self.grid.voxel
        top = torch.tensor([nx - 2, ny - 2, nz - 2], device=x.device)
        i0 = torch.minimum(g.floor().long().clamp_min(0), top)
        f = (g - i0).clamp(0, 1)
        base = (i0[:, 2] * ny + i0[:, 1]) * nx + i0[:, 0]
        w1 = torch.stack([1 - f, f], dim=1)  # [N, 2 (lo/hi), 3 (x, y, z)]
        w = (w1[:, :, None, None, 2] * w1[:, None, :, None, 1] * w1[:, None, None, :, 0]).reshape(-1, 8)
        return self.rows.view(-1)[base[:, None] + self._offsets(x.device)], w

    def _offsets(self, device) -> torch.Tensor:
        nx, ny, _ = self.grid.shape
        return torch.tensor([(dz * ny + dy) * nx + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
                            device=device)[None]

    def raw_density(self, x: torch.Tensor) -> torch.Tensor:
        idx, w = self._corners(x)
        table = torch.cat([self.density, self.density.new_full((1,), EMPTY_DENSITY)])
        return (table[idx] * w).sum(1)

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        return density_activation(self.raw_density(x), self.grid.voxel)

    def appearance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour [N, 3] and class probabilities [N, K] at world points."""
        idx, w = self._corners(x)
        table = torch.cat([self.features, self.features.new_zeros(1, self.features.shape[1])])
        h = self.mlp((table[idx] * w[..., None]).sum(1))
        return torch.sigmoid(h[:, :3]), torch.softmax(h[:, 3:], dim=-1)

    def dense_density(self) -> torch.Tensor:
        """Raw density at every corner [Z, Y, X], air where inactive."""
        out = torch.full(self.rows.shape, EMPTY_DENSITY, device=self.density.device)
        out[self.active] = self.density.detach()
        return out

    def corner_rows(self, mask: torch.Tensor) -> torch.Tensor:
        """Table rows of the corners in mask [Z, Y, X] (which must be active)."""
        return self.rows[mask]

    @torch.no_grad()
    def occupancy(self) -> torch.Tensor:
        return occupancy_from_density(self.dense_density())
