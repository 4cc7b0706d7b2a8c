"""RoPE frequencies and rotation equal transformers' bit for bit."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from tinyserve_core.model import ModelConfig
from tinyserve_core.model.rope import apply_rope, rope_cos_sin, rope_inv_freq

SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    # original context short enough that all three llama3 bands (kept, interpolated,
    # slowed) occur among 32 frequencies.
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}


@pytest.mark.parametrize("kind", list(SCALINGS))
def test_inv_freq_and_rotation_equal_hf(kind):
    hc = transformers.LlamaConfig(vocab_size=10, hidden_size=256, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=4, rope_theta=50000.0, rope_scaling=SCALINGS[kind])
    ours_cfg = ModelConfig.from_dict(hc.to_dict())
    ours = rope_inv_freq(ours_cfg)
    if kind == "default":
        ref = LlamaRotaryEmbedding.compute_default_rope_parameters(hc)[0]
    else:
        ref = ROPE_INIT_FUNCTIONS[kind](hc)[0]
    assert torch.equal(ours, ref)
    if kind == "llama3":  # the three bands all occur, so the test covers each branch
        base = rope_inv_freq(ModelConfig.from_dict({**hc.to_dict(), "rope_parameters": None, "rope_theta": 50000.0}))
        ratio = base / ours
        assert (ratio == 1).any() and (ratio == 8).any() and ((ratio > 1) & (ratio < 8)).any()

    pos = torch.tensor([[0, 3, 17, 100, 1000]])
    x = torch.randn(1, 5, 4, 64)  # [B, T, H, D]
    cos, sin = rope_cos_sin(pos, ours, torch.float32)
    hf_cos, hf_sin = LlamaRotaryEmbedding(hc)(x, pos)
    assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin)
    q_ref, _ = apply_rotary_pos_emb(x.transpose(1, 2), x.transpose(1, 2), hf_cos, hf_sin)
    assert torch.equal(apply_rope(x, cos, sin), q_ref.transpose(1, 2))
