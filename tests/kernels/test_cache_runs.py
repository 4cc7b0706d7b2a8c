"""`cache_runs.page_runs`: a write's page runs from its slot mapping, or None where the
CUDA op must find them itself (a page in two runs, padding)."""

from __future__ import annotations

import numpy as np

from tinyserve_core.kernels.cache_runs import page_runs


def _slots(pages_per_seq, starts, ends, bs):
    out = []
    for row, s, e in zip(pages_per_seq, starts, ends):
        out += [row[t // bs] * bs + t % bs for t in range(s, e)]
    return np.array(out, dtype=np.int64)


def test_a_prefill_of_several_sequences():
    bs = 4
    # sequence 0 on pages 7, 8 (adjacent blocks: slots run on across the page boundary), 2;
    # sequence 1 continues page 5 from offset 2, then page 0
    slots = _slots([[7, 8, 2], [9, 5, 0]], [0, 6], [10, 12], bs)
    runs = page_runs(slots, bs)
    assert runs.dtype == np.int32 and runs.tolist() == [[0, 4], [4, 4], [8, 2], [10, 2], [12, 4]]
    assert runs[:, 1].sum() == len(slots)
    # every run on one page, consecutive slots
    for first, n in runs:
        s = slots[first:first + n]
        assert len(set(s // bs)) == 1 and (np.diff(s) == 1).all()


def test_one_token_per_page_is_a_run_each():
    slots = np.array([4 * 3 + 1, 4 * 9, 4 * 2 + 3], dtype=np.int64)
    assert page_runs(slots, 4).tolist() == [[0, 1], [1, 1], [2, 1]]


def test_layouts_the_runs_path_does_not_take():
    bs = 4
    assert page_runs(np.array([0, 1, -1, 2], dtype=np.int64), bs) is None      # padding
    assert page_runs(np.array([0, 1, 8, 2, 3], dtype=np.int64), bs) is None    # page 0 twice
    assert page_runs(np.array([1, 0], dtype=np.int64), bs) is None              # out of order: two runs
    assert page_runs(np.zeros(0, dtype=np.int64), bs) is None
