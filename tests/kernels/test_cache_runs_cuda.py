"""reshape_and_cache's page-bounds kernels (the runs kernel, the default, and the first
one-pass design kept for A/B runs) against the torch reference: exact K/V and min/max on
random non-zero data, pages receiving their first token, partial pages, pages spanning two
calls, out-of-order and repeated slots, and many calls in a row (the runs kernel keeps
epoch-tagged state on the device between calls). GPU only."""

from __future__ import annotations

import pytest
import torch

from .test_kernels_cuda import DEV, _fill_order_slots, _pools, _write_both

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(params=[1, 0], ids=["runs", "first-design"])
def variant(request, cuda_ops):
    from tinyserve_core.kernels._backend import build

    ext = build()
    ext.set_cache_variant(request.param)
    yield cuda_ops
    ext.set_cache_variant(1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bs", [8, 16, 128])
def test_prefill_in_chunks_then_decode(variant, gen, dtype, bs):
    """A long prefill written in two calls (the second continues half-filled pages), then
    decode steps and a few tokens per sequence; one sequence starts mid-page."""
    lens = [16384 // 4, 5 * bs + 3, 1, bs - 1 or 1, 2 * bs, 999]
    tables, ours, refs = _pools(lens, 3 * bs, 3, bs, 8, 128, dtype, gen)
    mid = [n // 3 + 1 for n in lens]
    step = lambda a, b: _write_both(variant, ours, refs, torch.tensor(  # noqa: E731
        _fill_order_slots(b, a, tables, bs), dtype=torch.int64, device=DEV), gen)
    step([0] * len(lens), mid)
    step(mid, lens)
    for i in range(3):
        step([n + i for n in lens], [n + i + 1 for n in lens])
    step([n + 3 for n in lens], [n + bs + 5 for n in lens])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_irregular_pages_are_recomputed(variant, gen, dtype):
    """Shuffled tokens, then a page written by two runs of one call and padding: every page
    ends with the reference's bounds. (A slot written twice in one call has no defined
    winner, in the reference either.)"""
    bs = 16
    lens = [300, 45, 17]
    tables, ours, refs = _pools(lens, 2 * bs, 2, bs, 2, 64, dtype, gen)
    slots = torch.tensor(_fill_order_slots(lens, [0] * 3, tables, bs), dtype=torch.int64, device=DEV)
    _write_both(variant, ours, refs, slots[torch.randperm(slots.numel(), generator=gen, device=DEV)], gen)
    nxt = torch.tensor(_fill_order_slots([n + 20 for n in lens], lens, tables, bs), dtype=torch.int64, device=DEV)
    split = torch.cat([nxt[:5], nxt[25:30], nxt[5:25], nxt.new_tensor([-1]), nxt[30:]])
    _write_both(variant, ours, refs, split, gen)  # two runs on a page, padding inside


def test_state_survives_a_smaller_then_larger_cache(cuda_ops, gen):
    """The runs kernel's per-device state is shared by caches of different sizes (layers,
    pools): alternating between a small and a large pool keeps every bound exact."""
    bs = 16
    big = _pools([4000, 900], 64, 50, bs, 4, 64, torch.float16, gen)
    small = _pools([120, 120], 0, 2, bs, 4, 64, torch.float16, gen)
    done = [[0, 0], [0, 0]]
    for _ in range(3):
        for i, (tables, ours, refs) in enumerate((big, small)):
            end = [s + 37 for s in done[i]]
            sm = torch.tensor(_fill_order_slots(end, done[i], tables, bs), dtype=torch.int64, device=DEV)
            _write_both(cuda_ops, ours, refs, sm, gen)
            done[i] = end
