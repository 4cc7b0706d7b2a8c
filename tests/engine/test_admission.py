"""Admission counts exactly the KV slots a request ever holds at its peak: a sequence writes every token but its last sampled one, and the n samples
of a request share the full blocks of its prompt. At the limit the request runs to
the end without preemption; one block less and it is rejected with the reason."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine, peak_blocks
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.model.loader import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


def _engine(tiny, num_blocks, block_size=16, **kw):
    model, tok = tiny
    cfg = EngineConfig.from_dict({"device": "cpu", "block_size": block_size, "num_blocks": num_blocks,
                                  "enable_prefix_caching": False, **kw})
    return Engine(cfg, model=model, tokenizer=tok)


def _run(eng, prompt_len, max_tokens, n=1):
    """Add one request, run it to the end; (reject reason or None, finished sequences)."""
    params = SamplingParams(temperature=0.0 if n == 1 else 1.0, seed=1, max_tokens=max_tokens, n=n,
                            ignore_eos=True)
    eng.add_request(list(range(3, 3 + prompt_len)), params, request_id="r")
    recs = [eng.step()]
    while eng.has_unfinished():
        recs.append(eng.step())
        eng.block_manager.check_invariants()
    rejects = [e.reason for r in recs for e in r.events if e.kind == "reject"]
    finished = [t for r in recs for t in r.finished]
    assert eng.scheduler.num_preemptions == 0
    assert eng.block_manager.stats().used == 0    # nothing leaked
    return (rejects[0] if rejects else None), finished


def test_fifteen_plus_two_tokens_fit_one_block_of_sixteen(tiny):
    # the 17th token is sampled last and never written: 16 slots, one block
    reason, done = _run(_engine(tiny, num_blocks=1), 15, 2)
    assert reason is None and [t.num_output_tokens for t in done] == [2]


def test_one_token_past_the_limit_is_rejected_with_the_numbers(tiny):
    reason, done = _run(_engine(tiny, num_blocks=1), 15, 3)
    assert done == [] and reason.startswith("pool too small:")
    assert "2 blocks" in reason and "pool has 1" in reason


@pytest.mark.parametrize("prompt_len,max_tokens,n", [
    (32, 2, 2),    # prompt of two full blocks, shared; one block each for the outputs
    (20, 5, 3),    # a partial last prompt block: one copy per sample
    (20, 1, 4),    # one token each: nothing written after the prefill, all blocks shared
    (7, 30, 2),    # outputs spill into further blocks
])
def test_n_samples_share_the_prompt_at_the_limit_and_not_one_block_less(tiny, prompt_len, max_tokens, n):
    need = peak_blocks(prompt_len, prompt_len + max_tokens, n, 16)
    reason, done = _run(_engine(tiny, num_blocks=need, max_num_seqs=n), prompt_len, max_tokens, n)
    assert reason is None and [t.num_output_tokens for t in done] == [max_tokens] * n
    reason, done = _run(_engine(tiny, num_blocks=need - 1, max_num_seqs=n), prompt_len, max_tokens, n)
    assert done == [] and reason.startswith("pool too small:")


def test_peak_blocks_counts_the_shared_prompt_once():
    assert peak_blocks(15, 17, 1, 16) == 1
    assert peak_blocks(32, 34, 2, 16) == 4        # 2 shared + 1 each (was 6)
    assert peak_blocks(20, 25, 3, 16) == 1 + 3    # 1 shared + the partial block each
    assert peak_blocks(20, 21, 4, 16) == 2        # no decode write: all shared


def test_prompts_that_cannot_fit_the_context_are_rejected(tiny):
    eng = _engine(tiny, num_blocks=64, max_model_len=32)
    reason, _ = _run(eng, 32, 4)
    assert reason.startswith("prompt too long:") and "32" in reason
    reason, done = _run(_engine(tiny, num_blocks=64, max_model_len=32), 31, 4)
    assert reason is None and [t.num_output_tokens for t in done] == [1]   # the context ends it
    eng.add_request([], SamplingParams(max_tokens=2), request_id="e")
    assert [e.reason for e in eng.step().events if e.kind == "reject"] == ["empty prompt"]
