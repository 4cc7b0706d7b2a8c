"""Fused q/k/v and gate/up products (LlamaForCausalLM.fuse_projections) and the fused
norm/rotary/SiLU ops of forward_paged give the logits of the unfused model (CPU, tiny
configs), and leave the checkpoint view of the model as it was."""

from __future__ import annotations

import copy

import pytest
import torch

from tinyserve_core.model.config import ModelConfig
from tinyserve_core.model.llama import LlamaForCausalLM, PagedBatch

LLAMA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def paged_logits(model, ids):
    """forward_paged of one prefill of `ids` into a fresh cache: logits of every token."""
    from tinyserve_core.kv.kv_cache import KVCache
    kv = KVCache.for_model(model.config, 8, 16, torch.float32, torch.device("cpu"))
    n = len(ids)
    batch = PagedBatch(is_prefill=True, slot_mapping=torch.arange(16, 16 + n), block_tables=torch.tensor([[1, 2, 3]]),
                       seq_lens=torch.tensor([n], dtype=torch.int32), seq_ids=[0], query_start=[0, n], num_cached=[0])
    with torch.inference_mode():
        return model.forward_paged(torch.tensor(ids), torch.arange(n), batch, kv)


@pytest.mark.parametrize("extra", [{}, {"model_type": "qwen2", "attention_bias": True}])
def test_fused_and_unfused_models_give_the_same_logits(extra):
    torch.manual_seed(0)
    plain = LlamaForCausalLM(ModelConfig(**LLAMA, **extra))
    if extra:   # non-zero biases, so a lost or misplaced bias shows
        for layer in plain.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(p.bias, std=0.1)
    fused = copy.deepcopy(plain)
    fused.fuse_projections()
    a = fused.model.layers[0].self_attn
    assert a.qkv_weight is not None and fused.model.layers[0].mlp.gate_up_weight is not None
    assert (a.qkv_bias is not None) == bool(extra)
    ids = torch.randint(0, 128, (40,)).tolist()
    want = paged_logits(plain, ids)
    torch.testing.assert_close(paged_logits(fused, ids), want, atol=1e-5, rtol=1e-5)
    # and both agree with the dense (training) forward, which never uses the fused weights
    torch.testing.assert_close(want, plain.forward_dense(torch.tensor([ids]))[0].detach(), atol=1e-4, rtol=1e-4)


def test_fusing_keeps_the_checkpoint_names_and_shares_memory():
    torch.manual_seed(1)
    model = LlamaForCausalLM(ModelConfig(**LLAMA))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse_projections()
    after = model.state_dict()
    assert after.keys() == before.keys()     # the fused matrices are not checkpoint entries
    assert all(torch.equal(after[k], before[k]) for k in before)
    a = model.model.layers[0].self_attn
    fused = a.qkv_weight
    # loading into a separate projection writes the fused matrix (views, no copy)
    model.load_state_dict({"model.layers.0.self_attn.k_proj.weight": torch.ones_like(a.k_proj.weight)}, strict=False)
    assert torch.equal(fused[a.q_proj.out_features:a.q_proj.out_features + a.k_proj.out_features],
                       torch.ones_like(a.k_proj.weight))
    model.fuse_projections()
    assert a.qkv_weight is fused             # still views: nothing re-done


def test_a_copy_that_breaks_the_sharing_is_fused_afresh():
    torch.manual_seed(2)
    model = LlamaForCausalLM(ModelConfig(**LLAMA))
    model.fuse_projections()
    model.to(torch.float64)                  # converts each weight on its own
    a = model.model.layers[0].self_attn
    a.q_proj.weight.data.mul_(2)
    model.fuse_projections()
    assert a.qkv_weight.dtype == torch.float64
    assert torch.equal(a.qkv_weight[: a.q_proj.out_features], a.q_proj.weight)
