"""The engine end to end on a tiny random Llama: greedy outputs equal plain dense
decoding, and the memory machinery (prefix caching, fork + copy-on-write, preemption)
never changes what the model computes."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.errors import ConfigError
from tinyserve_core.model.loader import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    return model, tok


def make_engine(tiny, **kw) -> Engine:
    model, tok = tiny
    cfg = EngineConfig.from_dict({"device": "cpu", "block_size": 4, "num_blocks": 256, **kw})
    return Engine(cfg, model=model, tokenizer=tok)


def dense_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            logits = model.forward_dense(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def run_all(engine: Engine, check=True):
    records = []
    while engine.has_unfinished():
        records.append(engine.step())
        if check:
            engine.block_manager.check_invariants()
    return records


def outputs_by_request(records):
    out = {}
    for r in records:
        for t in r.finished:
            out.setdefault(t.request_id, []).append(list(t.output_token_ids))
    return out


PROMPTS = [
    [5, 17, 33, 2, 9, 41, 7],
    [11, 3, 8, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59],
    [101, 102],
    [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
]


def test_greedy_batch_matches_dense_decoding(tiny):
    model, _ = tiny
    eng = make_engine(tiny)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ids = [eng.add_request(p, params) for p in PROMPTS]
    outs = outputs_by_request(run_all(eng))
    for rid, prompt in zip(ids, PROMPTS):
        assert outs[rid] == [dense_greedy(model, prompt, 12)]


def test_prefix_cache_hit_reuses_blocks_and_keeps_outputs(tiny):
    model, _ = tiny
    shared = list(range(40, 57))  # 17 tokens: 4 full blocks of 4 + 1
    a, b = shared + [1, 2, 3], shared + [9, 8]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    eng = make_engine(tiny)
    ra = eng.add_request(a, params)
    recs = run_all(eng)
    rb = eng.add_request(b, params)
    recs += run_all(eng)
    hits = [e for r in recs for e in r.events if e.kind == "prefix_hit"]
    assert len(hits) == 1 and hits[0].num_tokens == 16
    assert recs[-1].metrics.prefix_cache_hits == 16
    outs = outputs_by_request(recs)
    assert outs[ra] == [dense_greedy(model, a, 6)]
    assert outs[rb] == [dense_greedy(model, b, 6)]


def test_parallel_samples_fork_and_copy_on_write(tiny):
    eng = make_engine(tiny)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # 10 tokens: the last block is shared, half full
    rid = eng.add_request(prompt, SamplingParams(temperature=1.0, seed=7, n=3, max_tokens=5,
                                                 ignore_eos=True))
    recs = run_all(eng)
    kinds = [e.kind for r in recs for e in r.events]
    assert kinds.count("fork") == 2
    cows = [e for r in recs for e in r.events if e.kind == "cow_copy"]
    assert len(cows) == 2  # two of the three writers copy; the last one owns the original
    assert len({c.dst for c in cows}) == 2
    outs = outputs_by_request(recs)[rid]
    assert len(outs) == 3 and all(len(o) == 5 for o in outs)
    # the same seed gives the same samples in a fresh engine
    eng2 = make_engine(tiny)
    rid2 = eng2.add_request(prompt, SamplingParams(temperature=1.0, seed=7, n=3, max_tokens=5,
                                                   ignore_eos=True))
    assert outputs_by_request(run_all(eng2))[rid2] == outs


def test_preemption_under_memory_pressure_loses_nothing(tiny):
    model, _ = tiny
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    eng = make_engine(tiny, num_blocks=14, enable_prefix_caching=False)
    ids = [eng.add_request(p, params) for p in PROMPTS]
    recs = run_all(eng)
    assert recs[-1].metrics.num_preemptions > 0
    assert any(e.kind == "preempt" for r in recs for e in r.events)
    outs = outputs_by_request(recs)
    for rid, prompt in zip(ids, PROMPTS):
        assert outs[rid] == [dense_greedy(model, prompt, 16)]


def test_request_that_can_never_fit_is_rejected_and_engine_goes_on(tiny):
    eng = make_engine(tiny, num_blocks=8)
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    eng.add_request(list(range(1, 60)), params, request_id="too-big")
    ok = eng.add_request([1, 2, 3], params)
    recs = run_all(eng)
    rejects = [e for r in recs for e in r.events if e.kind == "reject"]
    assert [e.request_id for e in rejects] == ["too-big"] and "blocks" in rejects[0].reason
    assert ok in outputs_by_request(recs)


def test_live_update_applies_at_next_step_and_restart_keys_are_refused(tiny):
    eng = make_engine(tiny, max_num_seqs=8)
    eng.update(max_num_seqs=1)
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    for p in PROMPTS[:3]:
        eng.add_request(p, params)
    rec = eng.step()
    assert rec.phase == "prefill" and len(rec.seq_ids) == 1
    with pytest.raises(ConfigError) as e:
        eng.update(block_size=8)
    assert e.value.field == "block_size"
    with pytest.raises(ConfigError) as e:
        eng.update(max_num_seqs=0)
    assert e.value.field == "max_num_seqs"


def test_usage_and_waste_metrics_follow_the_pool(tiny):
    eng = make_engine(tiny, num_blocks=64)
    eng.add_request(list(range(1, 11)), SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
    rec = eng.step()  # prefill 10 tokens into 3 blocks of 4
    m = rec.metrics
    assert m.kv_cache_usage_perc == pytest.approx(3 / 64)
    assert m.memory_waste == pytest.approx(2 / 12)
    run_all(eng)
    assert eng.block_manager.stats().usage_perc == 0.0


def test_admission_hashes_each_prompt_once(tiny, monkeypatch):
    """The budget check, the fit check and the allocation share one prefix plan."""
    import tinyserve_core.kv.block_manager as bm_mod
    calls = []
    real = bm_mod.iter_block_hashes
    monkeypatch.setattr(bm_mod, "iter_block_hashes", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    eng = make_engine(tiny, enable_prefix_caching=True)
    for prompt in ("the same system prompt, then one question", "the same system prompt, then another"):
        eng.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=2))
    eng.step()  # admits both (the second one after the first is scheduled)
    assert len(calls) == 2


def test_profile_key_fills_op_timings_and_changes_no_output(tiny):
    params = SamplingParams(temperature=1.0, seed=3, n=2, max_tokens=6, ignore_eos=True)
    plain, profiled = make_engine(tiny), make_engine(tiny, profile=True)
    outs = []
    for eng in (plain, profiled):
        rid = eng.add_request(PROMPTS[1], params, request_id="r")
        recs = run_all(eng, check=False)
        outs.append(outputs_by_request(recs)[rid])
        busy = [r for r in recs if r.phase != "idle"]
        if eng is plain:
            assert all(r.op_timings_s == {} and r.op_bytes == {} for r in recs)
        else:
            assert all({"total", "attention", "matmul"} <= set(r.op_timings_s) for r in busy)
            assert all(r.op_bytes["attention"] > 0 for r in busy)
    assert outs[0] == outs[1]
    # a live setting, applied at the next step
    plain.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
    plain.update(profile=True)
    assert "total" in plain.step().op_timings_s and plain.config.output.profile


def test_preempted_and_finished_sequences_leave_the_selector(tiny):
    """The scheduler reports preemptions and finished requests in its results and the
    engine has the selector forget them: h2o keeps no state for a sequence that left."""
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    eng = make_engine(tiny, num_blocks=14, enable_prefix_caching=False, policy="h2o", budget=8,
                      dense_layers=0)
    for p in PROMPTS:
        eng.add_request(p, params)
    saw_preempt = False
    while eng.has_unfinished():
        rec = eng.step()
        gone = {e.seq_id for e in rec.events if e.kind in ("preempt", "finish")}
        saw_preempt |= any(e.kind == "preempt" for e in rec.events)
        assert not gone & set(eng.selector.policy.tracked_sequences())
    assert saw_preempt and eng.selector.policy.tracked_sequences() == [] and eng.requests == {}


def test_live_updates_between_steps_all_apply(tiny):
    """Two updates before one step: the second builds on the first."""
    eng = make_engine(tiny, max_num_seqs=8, policy="h2o", budget=0.5)
    eng.update(max_num_seqs=2)
    eng.update(budget=0.25)
    eng.add_request(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True))
    eng.step()
    assert eng.config.scheduler.max_num_seqs == 2 and eng.scheduler.max_num_seqs == 2
    assert eng.config.selection.budget == 0.25


def sampled(tiny, requests, **kw):
    """{request id: outputs} for (id, prompt, params) added together to one engine."""
    eng = make_engine(tiny, **kw)
    for rid, prompt, params in requests:
        eng.add_request(prompt, params, request_id=rid)
    return outputs_by_request(run_all(eng, check=False))


def test_seeded_request_samples_the_same_tokens_in_any_batch(tiny):
    """A seeded request's tokens depend on its seed, sample index and logits only: alone,
    first or last in a batch, next to greedy and other seeded requests, the same."""
    seeded = ("s", PROMPTS[1], SamplingParams(temperature=1.0, top_k=40, top_p=0.95, seed=5, n=3,
                                              max_tokens=8, ignore_eos=True))
    others = [(f"o{i}", p, SamplingParams(temperature=t, seed=i, max_tokens=6, ignore_eos=True))
              for i, (p, t) in enumerate(zip(PROMPTS, (0.0, 1.2, 0.0, 0.5)))]
    alone = sampled(tiny, [seeded])["s"]
    assert len({tuple(o) for o in alone}) == 3          # siblings differ
    assert sampled(tiny, [seeded] + others)["s"] == alone
    assert sampled(tiny, others[::-1] + [seeded], max_num_seqs=3)["s"] == alone
    # greedy requests are unchanged by the sampled ones beside them
    mixed = sampled(tiny, [seeded] + others)
    assert mixed["o0"] == [dense_greedy(tiny[0], PROMPTS[0], 6)]


def test_one_batched_sample_call_per_step(tiny, monkeypatch):
    """Every step samples all its rows, forked siblings included, in one call that returns
    a plain list (one device-to-host transfer)."""
    import tinyserve_core.engine.engine as engine_mod
    calls = []

    def counting(logits, params, streams):
        out = real(logits, params, streams)
        calls.append((len(params), out))
        return out

    real = engine_mod.sample
    monkeypatch.setattr(engine_mod, "sample", counting)
    eng = make_engine(tiny)
    eng.add_request(PROMPTS[0], SamplingParams(temperature=1.0, seed=1, n=3, max_tokens=4, ignore_eos=True))
    eng.add_request(PROMPTS[1], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    busy = 0
    while eng.has_unfinished():
        before = len(calls)
        if eng.step().phase != "idle":
            busy += 1
            assert len(calls) == before + 1
    assert len(calls) == busy
    assert calls[0][0] == 2 + 2        # the first prefill: two rows plus two forked siblings
    assert all(isinstance(out, list) and all(type(t) is int for t in out) for _, out in calls)


def test_twostage_runs_from_the_engine_config(tiny):
    """The engine config carries twostage's knobs to the selector and live updates retune
    them; its decode steps select a subset of pages from the 4-bit key copy, which cache
    writes keep beside the pool."""
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    eng = make_engine(tiny, policy="twostage", budget=8, candidates=2.0, quant_bits=4, dense_layers=0,
                      stats=True)
    assert eng.selector.policy.params.quant_bits == 4
    eng.update(estimate_top_p=0.9)
    for p in PROMPTS:
        eng.add_request(p, params)
    recs = run_all(eng)
    assert eng.selector.policy.params.estimate_top_p == 0.9
    assert eng.runner.kv.qkey_bits == 4 and eng.runner.kv.qkeys[0].shape[-1] == eng.runner.kv.head_dim // 2
    sel = [s for r in recs for s in r.selection]   # a tuple per step: the summaries that arrived with it
    assert sel and max(max(s.context_pages) for s in sel) > 2 >= min(min(s.pages_selected) for s in sel)
    assert len(outputs_by_request(recs)) == len(PROMPTS)


def test_a_decode_step_writes_one_token_per_page(tiny, monkeypatch):
    # Decode steps promise the cache write that no two tokens share a page
    # (reshape_and_cache(one_per_page=True): its per-token bounds update races otherwise).
    # Forked samples share a half-full last page until copy-on-write gives each writer its own.
    from tinyserve_core import kernels
    real, promised = kernels.reshape_and_cache, []

    def checked(key, value, k_cache, v_cache, meta, slot_mapping, *args, one_per_page=False, **kw):
        if one_per_page:
            pages = [int(s) // k_cache.shape[1] for s in slot_mapping.tolist() if s >= 0]
            assert len(pages) == len(set(pages)), f"two tokens of a decode step in one page: {pages}"
            promised.append(len(pages))
        return real(key, value, k_cache, v_cache, meta, slot_mapping, *args, one_per_page=one_per_page, **kw)

    monkeypatch.setattr(kernels, "reshape_and_cache", checked)
    eng = make_engine(tiny)
    eng.add_request([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], SamplingParams(temperature=1.0, seed=7, n=3, max_tokens=5,
                                                                   ignore_eos=True))
    eng.add_request([2, 7, 1, 8], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    run_all(eng)
    assert promised and max(promised) >= 4   # decode steps with the three siblings and the other request
