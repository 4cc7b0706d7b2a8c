"""CI compile check of the scene frame kernel (csrc/kernels/scene_frame.cuh, through
instantiate_scene.cu) with nvcc alone, for sm_80 and sm_90a: it builds and does not
spill, and the library the scene loads (csrc/scene_ops.cu, a plain C ABI shared object)
links. Skipped without nvcc."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tinyserve_core.resources import csrc_dir

from .test_compile import ARCHS, compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_scene_frame_kernel_compiles_without_spills(tmp_path):
    rows = [r for r in compile_unit("instantiate_scene.cu", tmp_path) if "scene_frame_kernel" in r["kernel"]]
    assert {r["arch"] for r in rows} == set(ARCHS)
    spills = [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"
    # __launch_bounds__(128): at most 255 registers a thread are allowed; a per-ray loop
    # that needs more than 64 halves the warps an SM keeps in flight
    assert all(r["regs"] <= 64 for r in rows), rows


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_scene_frame_library_links(tmp_path):
    from tinyserve_core.scene import native

    out = tmp_path / "scene.so"
    cmd = ["nvcc", *native.CUDA_FLAGS, ARCHS["sm_90a"], f"-I{csrc_dir()}", str(csrc_dir() / native.CUDA_SOURCE),
           "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout
    for name in ("scene_frame_render", "scene_frame_params_size", "scene_frame_error"):
        assert name in symbols, name
    # it loads without a GPU, and its FrameParams is the ctypes mirror's
    import ctypes

    from tinyserve_core.scene.native import FrameParams

    assert ctypes.CDLL(str(out)).scene_frame_params_size() == ctypes.sizeof(FrameParams)
