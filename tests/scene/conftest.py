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
