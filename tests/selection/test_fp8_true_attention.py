"""Policies that read the cached keys themselves (true attention: h2o, oracle, oracle_p) over
an FP8 cache read the codes times their page's K scale: they must choose exactly what they
choose over a float32 cache holding those dequantised keys (powers-of-two scales make the
dequantised values exact, so the logits are the same floats)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import fp8_reference as f8
from tinyserve_core.selection import make_policy
from tinyserve_core.selection.base import SelectContext
from tinyserve_core.selection.true_attention import attention_logits, context_keys


def _pair(kv, tables, lens, q, seq_ids):
    """(the FP8 context, the float32 context over its dequantised keys and bounds)."""
    codes, ks = f8.quantize_cache(kv.k_caches[0] * 3.0)   # values of several binades
    vcodes, vs = f8.quantize_cache(kv.v_caches[0])
    scales = torch.stack([ks, vs], dim=1)
    bounds = f8.quantize(kv.metas[0] * 3.0, ks[:, None, :, None]).view(f8.FP8)
    common = dict(query=q, block_tables=tables, seq_lens=lens, seq_ids=list(seq_ids), layer_idx=0, scale=0.25,
                  block_size=kv.block_size)
    fp8 = SelectContext(k_cache=codes, v_cache=vcodes, meta=bounds, kv_scales=scales, **common)
    deq = SelectContext(k_cache=f8.dequantize_cache(codes, scales, 0), v_cache=f8.dequantize_cache(vcodes, scales, 1),
                        meta=f8.dequantize(bounds, ks[:, None, :, None]), **common)
    return fp8, deq


@pytest.mark.parametrize("name,params", [("oracle", {"budget": 48}), ("oracle_p", {"top_p_mass": 0.7}),
                                         ("h2o", {"budget": 40})])
def test_true_attention_policies_over_fp8_read_the_dequantised_keys(make_kv, name, params):
    kv, tables, lens = make_kv([203, 96, 150], num_kv_heads=2, block_size=8)
    over8, over32 = make_policy(name, dense_layers=0, **params), make_policy(name, dense_layers=0, **params)
    g = torch.Generator().manual_seed(1)
    for step in range(3):   # h2o accumulates: every step's choice must agree
        q = torch.randn(3, 4, 16, generator=g) * 2
        a, b = (pol.select(ctx) for pol, ctx in zip((over8, over32), _pair(kv, tables, lens, q, [4, 5, 6])))
        assert a.page_indices is not None and torch.equal(a.page_indices, b.page_indices), (name, step)
        assert torch.equal(a.budget_pages, b.budget_pages)


def test_context_keys_of_an_fp8_cache_are_its_dequantised_keys(make_kv):
    kv, tables, lens = make_kv([75], num_kv_heads=2, block_size=8)
    fp8, deq = _pair(kv, tables, lens, torch.randn(1, 4, 16), [0])
    keys = context_keys(fp8.k_cache, tables[0], 75, fp8.kv_scales)
    assert torch.equal(keys, context_keys(deq.k_cache, tables[0], 75))
    assert not torch.equal(keys, context_keys(fp8.k_cache, tables[0], 75))   # the codes alone are not the keys
    assert attention_logits(fp8.query[0], keys, 0.25).shape == (4, 75)
