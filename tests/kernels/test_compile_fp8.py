"""CI compile check of the FP8 KV-cache kernels (csrc/kernels/paged_attention_fp8.cuh,
cache_fp8.cuh) with nvcc alone, for sm_80 and sm_90a: every instance builds, none spills.
Skipped without nvcc."""

from __future__ import annotations

import shutil

import pytest

from .test_compile import ARCHS, compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_fp8_kernels_compile_without_spills(tmp_path):
    rows = compile_unit("instantiate_fp8.cu", tmp_path)
    assert {r["arch"] for r in rows} == set(ARCHS)
    names = [r["kernel"] for r in rows]
    # per arch: 2 head dims x (lookups per token, a window); 3 input dtypes; 3 input dtypes; one scale kernel
    for kernel, n in (("paged_decode_fp8_kernel", 4), ("fp8_cache_amax_kernel", 3),
                      ("fp8_cache_write_kernel", 3), ("fp8_cache_scale_kernel", 1)):
        assert sum(kernel in x for x in names) == n * len(ARCHS), f"{kernel} instances missing"
    spills = [r for r in rows if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"
    # the decode stream runs 4 CTAs of 128 threads an SM: 128 registers a thread at most
    decode = [r for r in rows if "paged_decode_fp8_kernel" in r["kernel"]]
    assert decode and all(0 < r["regs"] <= 128 for r in decode), decode
