"""Prefill attention on the GPU (torch's FlashAttention-2 varlen kernel over the packed
step, kernels/_cuda_prefill.py) against the torch spec on random data. Runs only with a
GPU (`pytest -m cuda`)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.kernels import prefill_reference

from .prefill_case import prefill_case

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
@pytest.mark.parametrize("new_lens,cached", [([5, 17, 1, 40], [0, 0, 0, 0]),
                                             ([5, 17, 1, 40, 300], [0, 16, 33, 7, 0]),
                                             ([128] * 64, [0] * 64),
                                             ([1, 2], [1000, 4095])])
@pytest.mark.parametrize("hq,hkv,d", [(8, 2, 64), (32, 8, 128)])
def test_varlen_prefill_matches_the_reference(dtype, new_lens, cached, hq, hkv, d):
    from tinyserve_core.kernels import _cuda_prefill
    case, _, _ = prefill_case(new_lens, cached, hq=hq, hkv=hkv, d=d, dtype=dtype, device="cuda")
    out = _cuda_prefill.prefill_attention(**case)
    ref = prefill_reference.prefill_attention(**case)
    err = (out.float() - ref.float()).abs().max().item()
    assert err < (2e-3 if dtype == torch.float16 else 1.6e-2), err


def test_float32_cache_goes_to_the_reference():
    from tinyserve_core.kernels import _cuda_prefill
    case, _, _ = prefill_case([5, 9], [3, 0], device="cuda")
    assert torch.equal(_cuda_prefill.prefill_attention(**case), prefill_reference.prefill_attention(**case))
