"""Torch reference (the spec) of the fused per-layer ops of the decode step.

A decoder layer is, besides its matrix products and attention, a handful of elementwise
steps that torch runs as separate kernels (RMSNorm alone is 8: cast, square, mean, add,
rsqrt, mul, cast, weight). On a GPU each is a launch, and in a captured decode step the
gaps between dependent launches cost more than their math. These ops fuse them; the
references are the unfused math of the model (HF Llama's rounding, step by step), so a
fused kernel that rounds where these round gives the same numbers:

* `rms_norm(x, w, eps)`: HF's RMSNorm: float32 normalisation, cast back, times the weight.
* `add_rms_norm(x, delta, w, eps)`: the residual add (in x's dtype) then rms_norm of the
  sum; returns (sum, normalised sum).
* `rotary_embedding(q, k, positions, inv_freq)`: rotate-half RoPE of q [N, Hq, D] and
  k [N, Hkv, D] in place at int64 positions [N]: cos/sin tables as `rope_cos_sin` builds
  them (float32 angles, cast to q's dtype), then x*cos + rot(x)*sin with each product and
  the sum rounded to the input dtype.
* `silu_and_mul(gate_up)`: silu(gate) * up for gate_up [N, 2I] = [gate | up].
* `linear(x, w, b)`: F.linear; the CUDA backend runs its own kernel for 1-4 rows of x (a
  decode step at small batch), where cuBLAS leaves a quarter of the bandwidth unused."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    s = x + delta
    return s, rms_norm(s, weight, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., H, D] rotated by cos/sin [..., D] (broadcast over heads), HF's rotate-half
    convention (first half paired with the second)."""
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin of shape positions.shape + [head_dim], computed in float32 then cast."""
    freqs = positions[..., None].float() * inv_freq.to(positions.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> None:
    cos, sin = rope_cos_sin(positions, inv_freq, q.dtype)
    q.copy_(rotate(q, cos, sin))
    k.copy_(rotate(k, cos, sin))


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           static_weight: bool = False) -> torch.Tensor:
    # static_weight is a scheduling promise for the CUDA kernel (it may read the weight
    # before its predecessor ends); it does not change the result.
    return F.linear(x, weight, bias)
