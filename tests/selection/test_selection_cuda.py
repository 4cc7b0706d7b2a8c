"""Quest on the GPU (`pytest -m cuda`, skipped without a GPU): the token-budget path
picks pages with the select_pages kernel instead of topk + sort, and must keep exactly
the set take_top keeps from the same scores."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.selection import make_policy
from tinyserve_core.selection.base import SelectContext, forced_pages, take_top

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _sets(page_indices):
    return [[set(r[r >= 0].tolist()) for r in row] for row in page_indices.cpu()]


def _gpu_ctx(kv, tables, lens_t, attend=False):
    dev = torch.device("cuda")
    q = torch.randn(len(lens_t), 8, 64).to(dev, torch.float16)
    return SelectContext(query=q, k_cache=kv.k_caches[0].to(dev, torch.float16),
                         v_cache=kv.v_caches[0].to(dev, torch.float16),
                         meta=kv.metas[0].to(dev, torch.float16), block_tables=tables.to(dev),
                         seq_lens=lens_t.to(dev), seq_ids=list(range(len(lens_t))), layer_idx=0,
                         scale=0.125, block_size=16, attend=attend)


@pytest.mark.parametrize("attend,one_launch", [(False, 8), (True, 0), (True, 8)])
@pytest.mark.parametrize("sink_pages", [0, 1, 3])
@pytest.mark.parametrize("budget", [16, 100, 512])
def test_quest_token_budget_on_gpu_equals_take_top(make_kv, sink_pages, budget, attend, one_launch):
    """Also when the caller takes the attention with the pages: with the one-launch path
    enabled (tuning `sparse_fused_max_batch` 8) quest hands over its output, without it the
    caller attends."""
    from tinyserve_core.kernels import _backend, tuning

    lens = [700, 95, 33, 250, 2]
    kv, tables, lens_t = make_kv(lens, num_kv_heads=2, head_dim=64, block_size=16, seed=budget + sink_pages)
    ctx = _gpu_ctx(kv, tables, lens_t, attend)
    pol = make_policy("quest", budget=budget, sink_pages=sink_pages, dense_layers=0)
    ext = _backend.build()
    try:
        ext.set_tuning(*tuning.args_of({**tuning.applied(), "sparse_fused_max_batch": one_launch}))
        sel = pol.select(ctx)
    finally:
        tuning.apply(ext)
    assert (sel.output is not None) == (attend and one_launch > 0)
    if sel.output is not None:
        want = kernels.paged_decode_attention(ctx.query, ctx.k_cache, ctx.v_cache, ctx.block_tables, ctx.seq_lens,
                                              ctx.scale, sel.page_indices)
        assert (sel.output.float() - want.float()).abs().max().item() < 2e-3
    assert sel.page_indices.is_cuda and sel.page_indices.dtype == torch.int32
    n = ctx.num_pages()
    M = tables.shape[1]
    keys = sel.scores.masked_fill(forced_pages(n, M, sink_pages)[:, None, :], float("inf"))
    kmax = max(-(-budget // 16), sink_pages + 1)
    want = take_top(keys, sel.budget_pages, kmax)
    assert _sets(sel.page_indices) == _sets(want)
    for b, L in enumerate(lens):  # the page being written is always attended
        assert all(((L - 1) // 16) in s for s in _sets(sel.page_indices)[b])
