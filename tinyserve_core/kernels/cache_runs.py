"""The page runs of a cache write, from its slot mapping: what `reshape_and_cache(...,
runs=)` lets the CUDA op skip finding on the GPU.

A run is a stretch of consecutive tokens whose slots are consecutive and lie on one page.
The op trusts a caller's runs to be the whole call: every token in exactly one run, no
page in two runs, and no padding (-1) slots; `page_runs` returns None for a call that is
not so (the op then finds the runs itself). A prefill's tokens are such a call: each
sequence writes its positions in order into its own pages."""

from __future__ import annotations

import numpy as np


def page_runs(slots: np.ndarray, block_size: int) -> np.ndarray | None:
    """int32 [R, 2] (first token, token count) of each run of `slots` (int64 [T]), or None
    when a page takes two runs, a slot is padding, or there is nothing to write."""
    slots = np.asarray(slots)
    n = slots.shape[0]
    if n == 0 or block_size <= 0 or bool((slots < 0).any()):
        return None
    page = slots // block_size
    brk = np.flatnonzero((page[1:] != page[:-1]) | (slots[1:] != slots[:-1] + 1)) + 1
    first = np.concatenate([[0], brk])
    pages = page[first]
    if np.unique(pages).shape[0] != pages.shape[0]:
        return None
    return np.stack([first, np.diff(np.append(first, n))], 1).astype(np.int32)
