"""Backend choice and lazy build, checked without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import _backend, reference


def test_cpu_tensors_use_the_reference(monkeypatch):
    monkeypatch.delenv("TINYSERVE_KERNELS", raising=False)
    assert _backend.backend_for(torch.device("cpu")) is reference


def test_forcing_values(monkeypatch):
    monkeypatch.setenv("TINYSERVE_KERNELS", "reference")
    assert _backend.backend_for(torch.device("cuda")) is reference
    monkeypatch.setenv("TINYSERVE_KERNELS", "triton")
    with pytest.raises(ValueError, match="TINYSERVE_KERNELS"):
        _backend.backend_for(torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_forced_cuda_without_gpu_raises_and_auto_falls_back(monkeypatch, capsys):
    monkeypatch.setenv("TINYSERVE_KERNELS", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _backend.backend_for(torch.device("cuda"))
    monkeypatch.setenv("TINYSERVE_KERNELS", "auto")
    monkeypatch.setattr(_backend, "_warned", False)
    assert _backend.backend_for(torch.device("cuda")) is reference
    assert _backend.backend_for(torch.device("cuda")) is reference
    assert capsys.readouterr().err.count("using the torch reference") == 1
    info = _backend.backend_info()
    assert info["backend"] == "reference" and info["reason"] == "no CUDA device"
    assert {"gpu", "build_status", "build_seconds", "arch"} <= info.keys()


def test_importing_and_cpu_ops_never_build():
    code = ("import torch; from tinyserve_core import kernels; from tinyserve_core.kernels import _backend;"
            "kc=torch.randn(4,8,2,64); m=torch.randn(4,2,2,64);"
            "kernels.reshape_and_cache(torch.randn(3,2,64), torch.randn(3,2,64), kc, kc.clone(), m,"
            " torch.tensor([0,1,9]));"
            "assert _backend._ext is None and _backend._state['status'] == 'not built'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "building" not in r.stderr


def test_arch_flags():
    assert _backend.arch_flag((9, 0)) == "-gencode=arch=compute_90a,code=sm_90a"
    assert _backend.arch_flag((8, 6)) == "-gencode=arch=compute_86,code=sm_86"


def test_stale_lock_is_removed_only_when_old_and_unowned(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    assert not _backend.clear_stale_lock(tmp_path, max_age_s=600)  # fresh: a build may be running
    assert lock.exists()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    builder = subprocess.Popen(["sleep", "30"], cwd=tmp_path)
    try:
        assert not _backend.clear_stale_lock(tmp_path, max_age_s=600)  # someone builds there
        assert lock.exists()
    finally:
        builder.kill()
        builder.wait()
    assert _backend.clear_stale_lock(tmp_path, max_age_s=600)
    assert not lock.exists()


def test_public_api_dispatches_by_device():
    q = torch.randn(2, 4, 64)
    kc = torch.randn(6, 8, 2, 64)
    bt = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    sl = torch.tensor([20, 9], dtype=torch.int32)
    out = kernels.paged_decode_attention(q, kc, kc, bt, sl, 0.125)
    torch.testing.assert_close(out, reference.paged_decode_attention(q, kc, kc, bt, sl, 0.125))
