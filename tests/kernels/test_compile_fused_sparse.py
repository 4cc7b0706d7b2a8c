"""CI compile check of the fused sparse decode kernel (csrc/kernels/fused_sparse.cuh) with nvcc
alone: every instance builds for sm_90a (clusters) and, as a trap stub, for sm_80; no spills,
and at most 2 x 128 x 255 registers' worth so two CTAs fit an SM. Skipped without nvcc."""

from __future__ import annotations

import shutil

import pytest

from .test_compile import ARCHS, compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_fused_sparse_kernel_compiles_without_spills(tmp_path):
    rows = compile_unit("instantiate_fused_sparse.cu", tmp_path)
    assert {r["arch"] for r in rows} == set(ARCHS)
    hopper = [r for r in rows if r["arch"] == "sm_90a" and "fused_sparse_decode_kernel" in r["kernel"]]
    assert len(hopper) == 4  # fp16 / bf16 x head_dim 64 / 128
    spills = [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"
    assert all(r["regs"] <= 255 for r in hopper)
