"""The CUDA backend of the fused decoder-layer ops (fused_reference.py is their spec):
input checks over the compiled extension. Shapes the kernels do not take (more than 2-D
rows for the norms, a weight of another dtype, heads that are not dense rows) go to the
reference."""

from __future__ import annotations

import os

import torch

from . import fused_reference
from ._cuda_ops import _extension


# TINYSERVE_SKINNY_GEMM=0 leaves every product to cuBLAS (to compare the two in a benchmark).
SKINNY_GEMM = os.environ.get("TINYSERVE_SKINNY_GEMM", "1").strip() != "0"
SKINNY_MAX_ROWS = 4


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """t as [N, C] rows with a dense last dimension, without a copy; None if it cannot be."""
    if t.stride(-1) != 1:
        return None
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:
        return None


def _norm_ok(x, weight) -> bool:
    return weight.dtype == x.dtype and x.dtype in (torch.float16, torch.bfloat16, torch.float32)


def rms_norm(x, weight, eps):
    rows = _rows(x)
    if rows is None or not _norm_ok(x, weight):
        return fused_reference.rms_norm(x, weight, eps)
    (out,) = _extension().rms_norm(rows, None, weight.contiguous(), float(eps))
    return out.view(x.shape)


def add_rms_norm(x, delta, weight, eps):
    rows, drows = _rows(x), _rows(delta)
    if rows is None or drows is None or delta.dtype != x.dtype or delta.shape != x.shape or not _norm_ok(x, weight):
        return fused_reference.add_rms_norm(x, delta, weight, eps)
    s, out = _extension().rms_norm(rows, drows, weight.contiguous(), float(eps))
    return s.view(x.shape), out.view(x.shape)


def rotary_embedding(q, k, positions, inv_freq) -> None:
    D = q.shape[-1]
    dense_heads = all(t.dim() == 3 and t.stride(2) == 1 and t.stride(1) == D for t in (q, k))
    if not dense_heads or k.dtype != q.dtype or inv_freq.numel() != D // 2:
        return fused_reference.rotary_embedding(q, k, positions, inv_freq)
    _extension().rotary_embedding(q, k, positions.to(device=q.device, dtype=torch.int64).contiguous(),
                                  inv_freq.to(device=q.device, dtype=torch.float32).contiguous())


def silu_and_mul(gate_up):
    rows = _rows(gate_up)
    if rows is None:
        return fused_reference.silu_and_mul(gate_up)
    return _extension().silu_and_mul(rows).view(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


def linear(x, weight, bias=None, static_weight: bool = False):
    """x [..., K] @ weight[N, K]^T (+ bias): the skinny kernel for 1-4 rows of fp16/bf16
    (aligned, K % 8 == 0), cuBLAS otherwise."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    ok = (SKINNY_GEMM and 1 <= rows <= SKINNY_MAX_ROWS and x.dtype in (torch.float16, torch.bfloat16)
          and weight.dtype == x.dtype and weight.is_contiguous() and x.shape[-1] % 8 == 0
          and weight.data_ptr() % 16 == 0 and (bias is None or bias.dtype == x.dtype))
    if not ok:
        return fused_reference.linear(x, weight, bias)
    x2 = x.reshape(rows, x.shape[-1])
    if not x2.is_contiguous() or x2.data_ptr() % 16:
        x2 = x2.contiguous()
    b = None if bias is None else bias.contiguous()
    return _extension().skinny_gemm(x2, weight, b, bool(static_weight)).view(*x.shape[:-1], weight.shape[0])
