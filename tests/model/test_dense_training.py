"""forward_dense is what LM training runs: it must train under autocast and compile."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.model import LlamaForCausalLM, ModelConfig

CFG = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


def test_bf16_autocast_step_reduces_loss_on_cpu():
    torch.manual_seed(0)
    model = LlamaForCausalLM(ModelConfig(**CFG))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 128, (4, 32))
    losses = []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.forward_dense(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 128), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert logits.dtype == torch.bfloat16
    assert losses[-1] < losses[0] - 0.5
    assert model.model.inv_freq.dtype == torch.float32


def test_positions_argument_is_relative():
    """RoPE attention depends only on position differences: a uniform shift keeps the
    logits, a gap in the positions changes them."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(ModelConfig(**CFG)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randint(0, 128, (1, 10))
    pos = torch.arange(10)[None]
    with torch.no_grad():
        a = model.forward_dense(x)
        shifted = model.forward_dense(x, positions=pos + 5)
        gapped = model.forward_dense(x, positions=torch.where(pos >= 5, pos + 7, pos))
    assert (a - shifted).abs().max() < 1e-4
    assert (a[0, 5:] - gapped[0, 5:]).abs().max() > 1e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_compiled_bf16_training_step_on_cuda():
    torch.manual_seed(0)
    model = LlamaForCausalLM(ModelConfig(**CFG)).cuda()
    compiled = torch.compile(model)
    x = torch.randint(0, 128, (4, 33), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model.forward_dense(x[:, :-1])
        out = compiled(x[:, :-1])
    assert (out.float() - eager.float()).abs().max().item() < 0.05
    loss = torch.nn.functional.cross_entropy(out.float().reshape(-1, 128), x[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
