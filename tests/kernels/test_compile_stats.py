"""CI compile check of the selection-statistics kernels (csrc/kernels/selection_stats.cuh,
instantiate_stats.cu) with nvcc alone, for sm_80 and sm_90a: every instance builds, none
spills. Skipped without nvcc."""

from __future__ import annotations

import re
import shutil

import pytest

from .test_compile import ARCHS, compile_unit


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_selection_stats_kernel_compiles_without_spills(tmp_path):
    rows = compile_unit("instantiate_stats.cu", tmp_path)
    pages = [r for r in rows if "stats_pages_kernel" in r["kernel"]]
    rows_k = [r for r in rows if "selection_stats_kernel" in r["kernel"]]
    # the pages kernel: 4 cache dtypes (FP8 too) x 2 head dims x 4 group bounds; the row
    # kernel: the 4 group bounds; per arch
    assert len(pages) == 32 * len(ARCHS) and len(rows_k) == 4 * len(ARCHS), (len(pages), len(rows_k))
    spills = [r for r in pages + rows_k if r.get("spill_st", 0) or r.get("spill_ld", 0) or r.get("stack", 0)]
    assert not spills, f"local-memory spills: {spills}"
    # __launch_bounds__(256, 2 or 3): two CTAs an SM fit the registers of every instance, three
    # those of FP8 slices up to 4 query heads per kv-head and of one head
    group = {r["kernel"]: int(re.search(r"Li(\d+)EEEv", r["kernel"]).group(1)) for r in pages}
    assert sorted(set(group.values())) == [1, 2, 4, 8]
    assert all(r["regs"] <= 128 for r in pages), pages
    three = [r for r in pages if group[r["kernel"]] == 1 or ("fp8" in r["kernel"] and group[r["kernel"]] <= 4)]
    assert len(three) == 12 * len(ARCHS) and all(r["regs"] <= 80 for r in three), three
