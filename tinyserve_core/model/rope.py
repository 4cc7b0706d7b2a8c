"""Rotary position embeddings with HF's frequency schedules (default, linear, llama3).

The inverse frequencies are computed exactly as transformers' modeling_rope_utils does
(float32, same operation order), so positions rotate bit-for-bit like the HF model."""

from __future__ import annotations

import math

import torch

from ..kernels.fused_reference import rope_cos_sin, rotate

__all__ = ["rope_inv_freq", "rope_cos_sin", "apply_rope"]
from .config import ModelConfig


def rope_inv_freq(config: ModelConfig, device=None) -> torch.Tensor:
    """float32 [head_dim // 2] inverse frequencies, scaled per config.rope_scaling."""
    dim = config.head_dim
    base = float(config.rope_theta)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim))
    rs = config.rope_scaling
    if rs is None:
        return inv_freq
    if rs["rope_type"] == "linear":
        return inv_freq / rs["factor"]
    if rs["rope_type"] == "llama3":
        return _llama3_inv_freq(inv_freq, rs)
    raise ValueError(f"rope_type {rs['rope_type']!r}")  # ModelConfig validation prevents this


def _llama3_inv_freq(inv_freq: torch.Tensor, rs: dict) -> torch.Tensor:
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band in
    # between interpolated smoothly (transformers._compute_llama3_parameters).
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x[..., H, D] by cos/sin[..., D] (broadcast over the head axis), HF's
    rotate-half convention (first half paired with second half). The math is the spec of
    the fused rotary op (kernels/fused_reference.py), which serving calls instead."""
    return rotate(x, cos, sin)
