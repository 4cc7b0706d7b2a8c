"""Scene tests load the shipped weights once (no training) and share one SceneLab."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Scene work is many small ops; on shared cores a second OpenMP thread that gets
    descheduled stalls every op (measured 4x slower under load), so scene tests run on
    one thread and restore the session's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lab():
    from tinyserve_core.scene.lab import SceneLab

    return SceneLab("room")


@pytest.fixture(scope="session")
def spec(lab):
    return lab.spec


@pytest.fixture(scope="session")
def first_occupied(lab):
    """f(o, d, rays, near, far, missed): distance of the first occupied cell of the bake's
    occupancy grid along each ray in `rays`, by a dense march at an eighth of a voxel
    (`missed` where there is none): every cell it finds is one the ray really enters."""
    bake = lab.bake
    space = bake.space

    def first(o, d, rays, near, far, missed):
        step = bake.grid.voxel / 8
        ts = near[rays, None] + torch.arange(int(float((far - near).max()) / step) + 1) * step
        inside = ts < far[rays, None]
        g = space.to_grid(o[rays, None] + ts[..., None] * d[rays, None])
        occupied = space.occupied[space.cells(g.reshape(-1, 3))].view(ts.shape) & inside
        return torch.where(occupied.any(1), ts.gather(1, occupied.float().argmax(1, keepdim=True))[:, 0], missed)

    return first
