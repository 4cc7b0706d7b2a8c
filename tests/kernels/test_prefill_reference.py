"""The prefill-attention spec (kernels/prefill_reference.py) against an explicit softmax:
cached prefixes read through scattered block tables, partial pages, grouped kv heads."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import prefill_reference

from .prefill_case import dense_attention, prefill_case


@pytest.mark.parametrize("new_lens,cached", [([5, 17, 1, 40], [0, 0, 0, 0]),
                                             ([5, 17, 1, 40], [0, 16, 33, 7]),
                                             ([3], [48])])
def test_prefill_reference_is_causal_attention_over_the_cached_context(new_lens, cached):
    case, ck, cv = prefill_case(new_lens, cached)
    out = prefill_reference.prefill_attention(**case)
    want = dense_attention(case, ck, cv)
    assert torch.allclose(out.double(), want, atol=1e-5)
    # the ops API sends a CPU tensor to the reference
    assert torch.equal(kernels.prefill_attention(**case), out)


def test_prefill_reference_ignores_cache_entries_past_each_context():
    case, ck, cv = prefill_case([4, 9], [20, 3])
    out = prefill_reference.prefill_attention(**case)
    # scribble over the free slots of the last page of each context: nothing may change
    bs = case["k_cache"].shape[1]
    for b, L in enumerate([24, 12]):
        last = case["block_tables"][b, (L - 1) // bs].long()
        case["k_cache"][last, L % bs or bs:] = 1e4
    assert torch.equal(prefill_reference.prefill_attention(**case), out)
