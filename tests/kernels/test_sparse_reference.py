"""sparse_decode_attention's reference (CPU): scoring, top-k and attention over the chosen
pages composed in one op, which the CUDA paths (three kernels, fused) must match."""

from __future__ import annotations

import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import reference


def test_reference_is_score_select_attend():
    g = torch.Generator().manual_seed(3)
    nb, bs, hkv, d, hq = 40, 8, 2, 64, 8
    kc = torch.randn(nb, bs, hkv, d, generator=g)
    vc = torch.randn(nb, bs, hkv, d, generator=g)
    meta = torch.stack([kc.amin(1), kc.amax(1)], 1)
    bt = torch.randperm(nb, generator=g)[:30].view(2, 15).to(torch.int32)
    sl = torch.tensor([117, 50], dtype=torch.int32)
    q = torch.randn(2, hq, d, generator=g)
    out, pages = kernels.sparse_decode_attention(q, kc, vc, meta, bt, sl, d ** -0.5, 4)
    scores = reference.page_scores(q, meta, bt, sl, d ** -0.5, bs)
    assert torch.equal(pages.sort(-1).values, scores.topk(4).indices.to(torch.int32).sort(-1).values)
    expect = reference._paged_decode_attention_loop(q, kc, vc, bt, sl, d ** -0.5, pages)
    assert torch.allclose(out, expect, atol=1e-5)
    # the selection matters: attending every page gives something else
    assert not torch.allclose(out, reference.paged_decode_attention(q, kc, vc, bt, sl, d ** -0.5), atol=1e-3)
