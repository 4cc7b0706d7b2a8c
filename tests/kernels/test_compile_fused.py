"""CI compile check of the fused decoder-layer kernels (csrc/kernels/fused_layer.cuh) with
nvcc alone, for sm_80 and sm_90a: every instance builds, none spills. Skipped without nvcc."""

from __future__ import annotations

import shutil

import pytest

from .test_compile import compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_fused_layer_kernels_compile_without_spills(tmp_path):
    rows = compile_unit("instantiate_fused.cu", tmp_path)
    names = [r["kernel"] for r in rows]
    for kernel, per_arch in (("rms_norm_kernel", 6), ("rotary_kernel", 3), ("silu_and_mul_kernel", 3),
                             ("skinny_gemm_kernel", 8)):
        # 3 dtypes (x with and without the residual add for the norm; skinny: 2 dtypes x 4
        # row counts) x 2 archs
        assert sum(kernel in n for n in names) == 2 * per_arch, f"{kernel} instances missing"
    assert not [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0)]
    # only cosf/sinf's reduction of huge angles keeps a small array in local memory
    assert not [r for r in rows if r.get("stack", 0) and "rotary" not in r["kernel"]]
    assert all(r.get("stack", 0) <= 64 for r in rows)
