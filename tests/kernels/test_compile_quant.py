"""CI compile check of the twostage selector's kernels (csrc/kernels/quant_keys.cuh) with nvcc
alone, for sm_80 and sm_90a: every instance builds, none spills. Skipped without nvcc."""

from __future__ import annotations

import shutil

import pytest

from .test_compile import ARCHS, compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_quant_kernels_compile_without_spills(tmp_path):
    rows = compile_unit("instantiate_quant.cu", tmp_path)
    assert {r["arch"] for r in rows} == set(ARCHS)
    names = [r["kernel"] for r in rows]
    for kernel in ("quantize_keys_kernel", "page_estimates_kernel"):
        # 3 cache dtypes x 2 bit widths x 2 archs each
        assert sum(kernel in n for n in names) == 12, f"{kernel} instances missing"
    spills = [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_fused_twostage_kernels_compile_without_spills(tmp_path):
    """csrc/kernels/estimate_lse.cuh, estimate_lse_mma.cuh and twostage_select.cuh
    (instantiate_twostage.cu)."""
    rows = compile_unit("instantiate_twostage.cu", tmp_path)
    names = [r["kernel"] for r in rows]
    # 2 dtypes x 2 bit widths x 2 head dims x 4 group bounds for each estimate kernel, and
    # the 2 selections, per arch
    assert sum("estimate_lse_kernel" in n for n in names) == 32 * len(ARCHS)
    assert sum("estimate_lse_mma_kernel" in n for n in names) == 32 * len(ARCHS)
    assert sum("twostage_select_kernel" in n for n in names) == 2 * len(ARCHS)
    spills = [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"
