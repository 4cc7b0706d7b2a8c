"""The fused decoder-layer kernels (csrc/fused_ops.cu) against their torch reference
(kernels/fused_reference.py) on random non-zero data, outputs poisoned first. Runs only
with a GPU (`pytest -m cuda`)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import fused_reference as fr

from .test_kernels_cuda import DEV, poison_allocator, rand, rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", DTYPES)
# (1, 4096) .. (7, 1000): rows held in registers as 16-byte vectors; 1001 (not whole
# vectors), 16384 (more vectors than the block holds) and `shift` (rows that start off a
# 16-byte boundary) take the scalar loop
@pytest.mark.parametrize("rows,hidden,shift", [(1, 4096, 0), (64, 4096, 0), (7, 1000, 0), (2, 1001, 0),
                                               (3, 16384, 0), (5, 4096, 1)])
def test_rms_norm_kernels_match_the_reference(cuda_ops, gen, dtype, rows, hidden, shift):
    from tinyserve_core.kernels import _cuda_fused
    x = rand((rows, hidden + shift), dtype, gen, 3.0)[:, shift:]
    d = rand((rows, hidden), dtype, gen)
    w = (torch.rand(hidden, device=DEV, generator=gen) + 0.5).to(dtype)
    poison_allocator()
    out = _cuda_fused.rms_norm(x, w, 1e-5)
    assert rel_err(out, fr.rms_norm(x, w, 1e-5)) < TOL[dtype]
    poison_allocator()
    s, h = _cuda_fused.add_rms_norm(x, d, w, 1e-5)
    rs, rh = fr.add_rms_norm(x, d, w, 1e-5)
    assert torch.equal(s, rs)   # the add rounds exactly as torch's
    assert rel_err(h, rh) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 64])
def test_rotary_kernel_matches_the_reference_on_packed_views(cuda_ops, gen, dtype, n):
    from tinyserve_core.kernels import _cuda_fused
    Hq, Hkv, D = 32, 8, 128
    qkv = rand((n, (Hq + 2 * Hkv) * D), dtype, gen)
    pos = torch.randint(0, 32768, (n,), device=DEV, generator=gen)
    inv_freq = 1.0 / 500000 ** (torch.arange(0, D, 2, device=DEV, dtype=torch.float32) / D)
    want = qkv.clone()
    for t in (qkv, want):
        q, k, _ = t.split((Hq * D, Hkv * D, Hkv * D), dim=-1)
        rotary = _cuda_fused.rotary_embedding if t is qkv else fr.rotary_embedding
        rotary(q.view(n, Hq, D), k.view(n, Hkv, D), pos, inv_freq)
    # each product and the sum rounded where torch rounds; the angles' cos/sin may differ
    # from torch's in the last float32 bit, which rarely moves a rounded value
    assert rel_err(qkv, want) < TOL[dtype] / 10
    if dtype != torch.float32:
        assert (qkv != want).float().mean().item() < 0.01


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,inter", [(1, 11008), (64, 11008), (3, 100)])
def test_silu_and_mul_kernel_matches_the_reference(cuda_ops, gen, dtype, rows, inter):
    from tinyserve_core.kernels import _cuda_fused
    gate_up = rand((rows, 2 * inter), dtype, gen, 2.0)
    poison_allocator()
    out = _cuda_fused.silu_and_mul(gate_up)
    assert rel_err(out, fr.silu_and_mul(gate_up)) < TOL[dtype]


def test_fused_model_gives_the_unfused_logits_on_the_gpu(cuda_ops):
    from tinyserve_core.model.config import ModelConfig
    from tinyserve_core.model.llama import LlamaForCausalLM
    from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
    cfg = ModelConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 512, (1, 100))
    want = model.to(DEV, torch.float16).forward_dense(ids.to(DEV))[0].float()
    runner = ModelRunner(model, 32, 16, device=DEV, dtype=torch.float16, cuda_graphs=False)
    table = list(range(1, 9))
    got = runner.prefill([PrefillItem(0, ids[0, :99].tolist(), 0, table)]).logits
    assert rel_err(got[0], want[98]) < 1e-2
    got = runner.decode([DecodeItem(0, int(ids[0, 99]), 99, table)]).logits
    assert rel_err(got[0], want[99]) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("n,k,bias", [(6144, 4096, False), (4096, 11008, True), (32000, 4096, False), (100, 24, True)])
def test_skinny_gemm_matches_a_float32_product(cuda_ops, gen, dtype, rows, n, k, bias):
    from tinyserve_core.kernels import _cuda_fused
    x = rand((rows, k), dtype, gen)
    w = rand((n, k), dtype, gen, 0.02)
    b = rand((n,), dtype, gen) if bias else None
    poison_allocator()
    out = _cuda_fused.linear(x, w, b)
    want = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())
    assert out.shape == (rows, n) and out.dtype == dtype
    assert rel_err(out, want) < TOL[dtype]
    # weight loads issued before the PDL wait sum in the same order: the same bits
    assert torch.equal(_cuda_fused.linear(x, w, b, static_weight=True), out)
    # ... also when its input comes from the kernel just before it (a norm, as in a layer)
    ones = torch.ones(k, dtype=dtype, device=x.device)
    h = _cuda_fused.rms_norm(x, ones, 1e-6)
    assert torch.equal(_cuda_fused.linear(h, w, b, static_weight=True), _cuda_fused.linear(h.clone(), w, b))
    # a view of a packed product (what the fused q/k/v weights hand out) works the same
    half = _cuda_fused.linear(x[None], w[: n // 2])
    assert half.shape == (1, rows, n // 2)
    assert rel_err(half[0], x.float() @ w[: n // 2].float().T) < TOL[dtype]


def test_linear_leaves_larger_batches_to_cublas(cuda_ops, gen):
    from tinyserve_core.kernels import _cuda_fused
    x = rand((5, 256), torch.float16, gen)
    w = rand((64, 256), torch.float16, gen)
    assert torch.equal(_cuda_fused.linear(x, w), torch.nn.functional.linear(x, w))
