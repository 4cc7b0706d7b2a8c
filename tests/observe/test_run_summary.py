"""Run summary: throughput over the run's span, TTFT/TPOT percentiles, memory and
cache figures, the table and the JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyserve_core.observe.events import Reject
from tinyserve_core.observe.record import RequestTiming, StepMetrics, StepRecord
from tinyserve_core.observe.summary import format_summary_table, summarize, summary_to_json


def _timing(rid, seq, arrival, first_token, finish, out, sched=None):
    return RequestTiming(rid, seq, arrival, sched if sched is not None else arrival, first_token, finish,
                         prompt_len=10, num_output_tokens=out)


def _records_with(timings, **metric_rows):
    recs = []
    for i, t in enumerate(timings):
        recs.append(StepRecord(i, float(i), float(i + 1), "decode", (t.seq_id,), [],
                               StepMetrics(num_generation_tokens=t.num_output_tokens), [t]))
    return recs


def test_ttft_and_tpot_percentiles():
    ttfts = [0.010 * k for k in range(1, 11)]                 # 10..100 ms
    timings = [_timing(f"r{k}", k, 0.0, ttft, ttft + 0.002 * (k + 1) * 4, 5)
               for k, ttft in enumerate(ttfts)]              # tpot = 2(k+1) ms
    s = summarize(_records_with(timings))
    assert s.requests_finished == s.sequences_finished == 10
    assert s.ttft_p50_ms == pytest.approx(55.0)
    assert s.ttft_p99_ms == pytest.approx(99.1)               # linear interpolation
    assert s.ttft_mean_ms == pytest.approx(55.0)
    tpots = [2.0 * (k + 1) for k in range(10)]
    assert s.tpot_p50_ms == pytest.approx(np.percentile(tpots, 50))
    assert s.tpot_p99_ms == pytest.approx(np.percentile(tpots, 99))


def test_parallel_samples_count_one_request_with_its_earliest_first_token():
    timings = [_timing("a", 1, 1.0, 1.5, 2.0, 3), _timing("a", 2, 1.0, 1.2, 2.2, 3),
               _timing("b", 3, 0.0, 0.1, 0.5, 1)]             # one token: no TPOT
    s = summarize(_records_with(timings))
    assert (s.requests_finished, s.sequences_finished) == (2, 3)
    assert s.ttft_mean_ms == pytest.approx((200 + 100) / 2)
    assert s.tpot_mean_ms == pytest.approx((250 + 500) / 2)


def test_throughput_memory_cache_and_counters(run_records):
    s = summarize(run_records)
    span = run_records[-1].t_end - run_records[0].t_start
    prompt = sum(r.metrics.num_prompt_tokens for r in run_records)
    gen = sum(r.metrics.num_generation_tokens for r in run_records)
    assert s.duration_s == pytest.approx(span)
    assert s.busy_s == pytest.approx(sum(r.t_end - r.t_start for r in run_records if r.phase != "idle"))
    assert s.busy_s < s.duration_s                            # the fixture has an idle gap
    assert s.prompt_tokens_per_s == pytest.approx(prompt / span)
    assert s.generation_tokens_per_s == pytest.approx(gen / span)
    assert s.total_tokens_per_s == pytest.approx((prompt + gen) / span)
    assert s.peak_kv_usage == max(r.metrics.kv_cache_usage_perc for r in run_records)
    assert s.mean_memory_waste == pytest.approx(0.05)         # steps without blocks left out
    last = run_records[-1].metrics
    assert s.prefix_hit_rate == pytest.approx(last.prefix_cache_hits / last.prefix_cache_queries)
    assert s.num_preemptions == 1 and s.num_cow_copies == last.num_cow_copies > 0
    assert s.requests_finished == 5


def test_evictions_are_counted():
    from tinyserve_core.observe.events import Evict
    recs = [StepRecord(0, 0.0, 0.1, "idle", (), [Evict(7, 0x9f3a), Evict(8, 0x1)]),
            StepRecord(1, 0.1, 0.2, "idle", (), [Evict(7, 0x22)])]
    s = summarize(recs)
    assert s.num_evictions == 3 and summary_to_json(s)["num_evictions"] == 3
    assert "evictions" in format_summary_table(s)


def test_rejections_are_counted():
    rec = StepRecord(0, 0.0, 0.1, "idle", (), [Reject("r9", "prompt longer than the context")])
    s = summarize([rec])
    assert s.requests_rejected == 1 and s.requests_finished == 0
    assert s.ttft_p50_ms is None and s.prefix_hit_rate is None


def test_table_and_json(run_records):
    s = summarize(run_records)
    table = format_summary_table(s)
    for label in ("requests finished", "total tokens/s", "TTFT p50 / p99", "TPOT p50 / p99", "peak KV usage",
                  "mean memory waste", "prefix-cache hit rate", "preemptions", "copy-on-write copies"):
        assert label in table
    assert f"{s.total_tokens_per_s:.1f}" in table
    assert f"{s.ttft_p50_ms:.1f} / {s.ttft_p99_ms:.1f}" in table
    rows = table.splitlines()[2:]
    w0 = max(len(line.split("  ")[0]) for line in rows)
    assert all(line[w0:w0 + 2] == "  " for line in rows)       # labels share one column
    data = json.loads(json.dumps(summary_to_json(s)))
    assert data["requests_finished"] == 5 and data["ttft_p99_ms"] == pytest.approx(s.ttft_p99_ms)
    empty = summary_to_json(summarize([]))
    assert empty["ttft_p50_ms"] is None and "-" in format_summary_table(summarize([]))
