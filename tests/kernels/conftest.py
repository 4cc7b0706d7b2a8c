"""Kernel-test fixtures. GPU tests carry the `cuda` marker and skip cleanly without a GPU;
nothing here imports Qt."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def cuda_ops():
    """The CUDA backend (builds the extension once per session), or skip."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from tinyserve_core.kernels import _backend, _cuda_ops

    if _backend.nvcc_path() is None:
        pytest.skip("nvcc not found")
    _backend.build()
    return _cuda_ops


@pytest.fixture
def gen():
    """A fresh CUDA generator per test: random inputs, never zeros, reproducible by seed."""
    g = torch.Generator(device="cuda")
    g.manual_seed(torch.randint(0, 2**31 - 1, (1,)).item())
    return g
