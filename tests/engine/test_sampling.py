"""The batched sampler: Gumbel-max over a counter-based hash stream. A row's token depends
only on its seed, sample index, counter and logits; top-k/top-p stay inside their sets;
the draws follow the softmax (a chi-square check that a wrong temperature fails)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from tinyserve_core.engine.sampling import SamplingParams, _mix32, gumbel_noise, sample, stream_keys

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.7, 0.3, 0.0, -0.4, -0.9, -1.5, -2.5])


def draws(logits: torch.Tensor, params: SamplingParams, n: int, seed: int = 11) -> list[int]:
    """n draws of one logits row: one batch, one row per step counter."""
    return sample(logits.expand(n, -1), [params] * n, [(seed, 0, c) for c in range(n)])


def test_mix32_is_exact_in_int64_tensors():
    xs = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 0x9E3779B9]
    assert _mix32(torch.tensor(xs)).tolist() == [_mix32(x) for x in xs]
    # the reference multiply, in unbounded Python ints
    ref = [(x * 0x7FEB352D) % 2**32 for x in xs]
    from tinyserve_core.engine.sampling import _mul32
    assert [_mul32(x, 0x7FEB352D) for x in xs] == ref


def test_same_stream_same_token_in_any_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 2
    p = SamplingParams(temperature=0.8, top_k=20, top_p=0.9)
    alone = [sample(logits[i:i + 1], [p], [(42 + i, i % 2, 5)])[0] for i in range(6)]
    together = sample(logits, [p] * 6, [(42 + i, i % 2, 5) for i in range(6)])
    order = [3, 0, 5, 1, 4, 2]
    shuffled = sample(logits[order], [p] * 6, [(42 + i, i % 2, 5) for i in order])
    assert together == alone
    assert shuffled == [alone[i] for i in order]
    # with greedy rows and other params mixed in
    mixed = sample(torch.cat([logits[:1], logits]), [SamplingParams(temperature=0)] + [p] * 6,
                   [None] + [(42 + i, i % 2, 5) for i in range(6)])
    assert mixed[1:] == alone and mixed[0] == int(logits[0].argmax())


def test_batched_stream_keys_equal_the_scalar_ones():
    from tinyserve_core.engine.sampling import stream_keys_batch
    rng = np.random.default_rng(0)
    streams = [(int(rng.integers(0, 2**62)) * int(rng.integers(1, 9)), int(rng.integers(0, 64)),
                int(rng.integers(0, 2**40))) for _ in range(200)]
    streams += [(-5, 0, 0), (2**64 + 3, 1, 2), (0, 0, 0), (2**63, 2**32 + 1, 2**33)]
    got = stream_keys_batch(streams)
    assert got.dtype == np.int64 and got.shape == (len(streams), 2)
    assert [tuple(r) for r in got.tolist()] == [stream_keys(*s) for s in streams]
    assert stream_keys_batch([]).shape == (0, 2)


def test_streams_differ_by_seed_index_and_counter():
    base = stream_keys(7, 0, 0)
    assert len({base, stream_keys(8, 0, 0), stream_keys(7, 1, 0), stream_keys(7, 0, 1),
                stream_keys(7 + 2**32, 0, 0)}) == 5
    flat = torch.zeros(1, 1000)
    p = SamplingParams(temperature=1.0)
    toks = {sample(flat, [p], [(7, k, 0)])[0] for k in range(8)}
    assert len(toks) > 4   # siblings of one request draw different tokens


def test_greedy_rows_take_the_argmax():
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(1))
    greedy = SamplingParams(temperature=0)
    assert sample(logits, [greedy] * 5, [None] * 5) == logits.argmax(-1).tolist()


def test_top_k_and_top_p_stay_inside_their_sets():
    logits = torch.randn(30, generator=torch.Generator().manual_seed(2)) * 3
    top5 = set(torch.topk(logits, 5).indices.tolist())
    assert set(draws(logits, SamplingParams(temperature=2.0, top_k=5), 3000)) <= top5
    probs = torch.softmax(logits, -1)
    order = probs.argsort(descending=True).tolist()
    cum, nucleus = 0.0, set()
    for i in order:
        nucleus.add(i)
        cum += probs[i].item()
        if cum >= 0.7:
            break
    got = set(draws(logits, SamplingParams(temperature=1.0, top_p=0.7), 3000))
    assert got <= nucleus and len(got) == len(nucleus)
    # both at once, and top-p far below the top token's mass keeps the top token only
    assert set(draws(logits, SamplingParams(top_k=5, top_p=0.7), 2000)) <= top5 & nucleus
    assert set(draws(logits, SamplingParams(top_p=1e-6), 200)) == {order[0]}


def counts(tokens: list[int], k: int) -> list[int]:
    return torch.bincount(torch.tensor(tokens), minlength=k).tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_draws_follow_the_softmax_like_multinomial(temperature):
    n = 20_000
    p = SamplingParams(temperature=temperature)
    expected = torch.softmax(LOGITS.double() / temperature, -1)
    ours = counts(draws(LOGITS, p, n), 10)
    assert chisquare(ours, (expected * n).tolist()).pvalue > 1e-3
    multi = torch.multinomial(expected, n, replacement=True, generator=torch.Generator().manual_seed(0))
    assert chisquare(counts(multi.tolist(), 10), (expected * n).tolist()).pvalue > 1e-3
    # the check can fail: draws at another temperature are rejected
    wrong = counts(draws(LOGITS, SamplingParams(temperature=temperature * 1.25), n), 10)
    assert chisquare(wrong, (expected * n).tolist()).pvalue < 1e-3


def test_noise_is_gumbel():
    g = gumbel_noise(torch.tensor([[stream_keys(3, 0, 0)[0], stream_keys(3, 0, 0)[1]]]), 100_000)
    assert abs(g.mean().item() - 0.5772) < 0.02 and abs(g.var().item() - 1.6449) < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_draws_equal_cpu_draws():
    logits = torch.randn(64, 4000, generator=torch.Generator().manual_seed(3)) * 3
    params = [SamplingParams(temperature=t, top_k=k, top_p=tp)
              for t, k, tp in [(1.0, 0, 1.0), (0.7, 50, 1.0), (1.3, 0, 0.9), (0.0, 0, 1.0)] * 16]
    streams = [None if p.greedy else (1000 + i, i % 3, i) for i, p in enumerate(params)]
    assert sample(logits.cuda(), params, streams) == sample(logits, params, streams)
    # the hash itself is bit-exact across devices (log may differ in the last ulp)
    x = torch.arange(0, 2**32, 2**20 + 7)
    assert torch.equal(_mix32(x.cuda()).cpu(), _mix32(x))
