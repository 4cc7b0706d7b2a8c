"""The engine reads selection statistics one step late and reports each step's host
and device time (CPU: the same code path as the GPU's, run synchronously)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.model.loader import load_model
from tinyserve_core.observe.summary import summarize


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


def _engine(tiny, **kw) -> Engine:
    model, tok = tiny
    cfg = EngineConfig.from_dict({"device": "cpu", "block_size": 4, "num_blocks": 256, **kw})
    return Engine(cfg, model=model, tokenizer=tok)


def test_statistics_arrive_one_step_late_and_every_decode_step_once(tiny):
    eng = _engine(tiny, policy="quest", budget=8, dense_layers=1, stats=True, tier_pages=2)
    for i in range(3):
        eng.add_request(list(range(3 + i, 40 + 3 * i)), SamplingParams(temperature=0.0, max_tokens=6 + i))
    records = []
    while eng.has_unfinished():
        records.append(eng.step())
    decode = [r for r in records if r.phase == "decode"]
    got = [s for r in records for s in r.selection]
    assert [s.step for s in got] == list(range(len(decode)))      # each decode step once, in order
    assert records[-1].selection                                      # the last one is not lost
    first = records.index(decode[0])
    assert records[first].selection == () and records[first + 1].selection[0].step == 0  # a step late
    cfg = tiny[0].config
    for s in got:   # every (sequence, selected layer, kv-head) record of the step, as columns
        step_seqs = decode[s.step].seq_ids
        assert s.detail.seq_ids.tolist() == list(step_seqs)
        assert s.detail.per_head.shape[:3] == (cfg.num_hidden_layers - 1, len(step_seqs), cfg.num_key_value_heads)
        assert s.detail.tier_hits is not None
    assert not any(e.kind == "page_selection" for r in records for e in r.events)   # no event per record


def test_each_step_reports_host_and_device_time(tiny):
    eng = _engine(tiny)
    eng.add_request(list(range(5, 30)), SamplingParams(temperature=0.0, max_tokens=5))
    records = []
    while eng.has_unfinished():
        records.append(eng.step())
    for r in records:
        m = r.metrics
        assert m.device_time_s > 0 and m.host_time_s > 0
        assert m.device_time_s <= m.step_time_s     # the forward and sampling are inside the step
    s = summarize(records)
    assert s.host_ms_per_step == pytest.approx(1e3 * sum(r.metrics.host_time_s for r in records) / len(records))
    assert 0 < s.device_busy_frac <= 1


def test_device_span_sums_its_segments_and_leaves_pauses_to_the_host(monkeypatch):
    from tinyserve_core.engine import step_timing
    clock = iter([1.0, 3.0, 10.0, 10.5, 20.0]).__next__
    monkeypatch.setattr(step_timing.time, "perf_counter", clock)
    span = step_timing.DeviceSpan(None)
    span.resume()                       # nothing started yet: nothing to resume
    span.start(); span.start()          # one start per step  (1.0; the second is ignored)
    span.pause(); span.pause()          # 3.0
    span.resume()                       # 10.0
    span.stop()                         # 10.5
    assert span.seconds() == pytest.approx(2.5)
    assert step_timing.DeviceSpan(None).seconds() == 0.0


def test_reading_the_selection_records_counts_as_host_time(tiny):
    import time as _time
    eng = _engine(tiny, policy="quest", budget=8, dense_layers=1, stats=True)
    for i in range(2):
        eng.add_request(list(range(3 + i, 40 + i)), SamplingParams(temperature=0.0, max_tokens=4))
    collect = eng.selector.collect

    def slow_collect(*a, **k):
        _time.sleep(0.05)
        return collect(*a, **k)
    eng.selector.collect = slow_collect
    records = []
    while eng.has_unfinished():
        records.append(eng.step())
    for r in records:
        assert r.metrics.host_time_s >= 0.05 and r.metrics.device_time_s < r.metrics.step_time_s - 0.05
