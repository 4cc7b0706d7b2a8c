"""The fused decoder-layer ops' references (kernels/fused_reference.py) against the
unfused math they replace, on the CPU (what the CPU path runs and what the CUDA kernels
are compared with)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinyserve_core import kernels
from tinyserve_core.kernels import fused_reference as fr


def unfused_norm(x, w, eps):
    # HF LlamaRMSNorm written out: float32 variance, cast back, then the weight
    h = x.to(torch.float32)
    var = (h * h).sum(-1, keepdim=True) / x.shape[-1]
    return w * (h / torch.sqrt(var + eps)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rms_norm_and_add_rms_norm_match_the_unfused_norm(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(5, 64, generator=g) * 3).to(dtype)
    d = torch.randn(5, 64, generator=g).to(dtype)
    w = (torch.rand(64, generator=g) + 0.5).to(dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-5), unfused_norm(x, w, 1e-5), **tol)
    s, h = kernels.add_rms_norm(x, d, w, 1e-5)
    assert torch.equal(s, x + d)   # the residual add rounds in x's dtype
    torch.testing.assert_close(h, unfused_norm(x + d, w, 1e-5), **tol)


def test_rotary_rotates_q_and_k_in_place_inside_a_packed_projection():
    g = torch.Generator().manual_seed(2)
    N, Hq, Hkv, D = 3, 4, 2, 8
    qkv = torch.randn(N, (Hq + 2 * Hkv) * D, generator=g)
    q, k, v = qkv.split((Hq * D, Hkv * D, Hkv * D), dim=-1)
    q, k, v = q.view(N, Hq, D), k.view(N, Hkv, D), v.view(N, Hkv, D)
    pos = torch.tensor([0, 5, 17])
    inv_freq = 1.0 / 10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    ang = pos[:, None].float() * inv_freq
    def by_pairs(x):  # each (i, i + D/2) pair turned by its angle, written out
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        c, s = ang.cos()[:, None], ang.sin()[:, None]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)

    want_q, want_k, want_v = by_pairs(q.clone()), by_pairs(k.clone()), v.clone()
    kernels.rotary_embedding(q, k, pos, inv_freq)
    torch.testing.assert_close(q, want_q)
    torch.testing.assert_close(k, want_k)
    assert torch.equal(v, want_v)   # v is left alone
    torch.testing.assert_close(qkv[:, : Hq * D], want_q.reshape(N, -1))  # written through the view


def test_rotary_rounds_each_product_like_torch_half_math():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 8, generator=g).half()
    cos, sin = torch.rand(2, 8, generator=g).half(), torch.rand(2, 8, generator=g).half()
    c, s = cos[:, None], sin[:, None]
    rot = torch.cat((-x[..., 4:], x[..., :4]), -1)
    assert torch.equal(fr.rotate(x, cos, sin), x * c + rot * s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_silu_and_mul_matches_gate_and_up(dtype):
    g = torch.Generator().manual_seed(4)
    gate, up = torch.randn(3, 16, generator=g).to(dtype), torch.randn(3, 16, generator=g).to(dtype)
    out = kernels.silu_and_mul(torch.cat((gate, up), -1))
    assert out.shape == (3, 16)
    torch.testing.assert_close(out, F.silu(gate) * up)
    torch.testing.assert_close(out.float(), gate.float() * torch.sigmoid(gate.float()) * up.float(),
                               atol=1e-2, rtol=1e-2)
