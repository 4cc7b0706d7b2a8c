"""The exporters on a real engine run (tiny random model): the trace validates, the
CSV has one row per step, and the summary agrees with the workload."""

from __future__ import annotations

import csv

import pytest

from tinyserve_core.observe.csv_export import write_metrics_csv
from tinyserve_core.observe.summary import summarize
from tinyserve_core.observe.trace import TraceWriter, validate_trace


pytestmark = pytest.mark.slow   # a few seconds on an idle 2-core machine


@pytest.fixture(scope="module")
def sim(tiny_model_dir):
    from tinyserve_core.engine.config import EngineConfig
    from tinyserve_core.engine.simulate import Simulation

    cfg = EngineConfig.from_dict(dict(
        model=str(tiny_model_dir), device="cpu", requests=6, rate=40.0, prompt_len=24,
        prompt_len_max=80, output_len=4, output_len_max=8, shared_prefix_frac=0.5,
        shared_prefix_len=16, num_prefix_groups=2, n=2, num_blocks=48, block_size=8, seed=1))
    s = Simulation(cfg)
    s.writer = TraceWriter()
    while not s.done:
        s.writer.add(s.step())
    return s


def test_trace_of_a_real_run_validates(sim):
    trace = sim.writer.trace()
    assert validate_trace(trace) == []
    outer = [e for e in trace["traceEvents"] if e["ph"] == "b" and e["name"].startswith("request ")]
    assert len(outer) == sum(w.n for w in sim.workload)          # one track per sequence
    assert not any(e["args"].get("unfinished") for e in outer)
    steps = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(steps) == sum(r.phase != "idle" for r in sim.records)


def test_csv_and_summary_of_a_real_run(sim, tmp_path):
    path = tmp_path / "m.csv"
    write_metrics_csv(sim.records, path)
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(sim.records)
    s = summarize(sim.records)
    assert s.requests_rejected == 0 and s.requests_finished == len(sim.workload)
    assert s.sequences_finished == sum(w.n for w in sim.workload)
    assert s.generation_tokens >= sum(t.num_output_tokens for r in sim.records for t in r.finished)
    assert 0 < s.peak_kv_usage <= 1 and s.ttft_p50_ms is not None
    assert s.prefix_cache_queries > 0 and s.prefix_hit_rate is not None


def test_selection_records_are_kept_for_the_newest_steps_and_counted_in_the_trace(tiny_model_dir):
    from tinyserve_core.engine.config import EngineConfig
    from tinyserve_core.engine.simulate import Simulation
    from tinyserve_core.observe.trace import build_trace

    cfg = EngineConfig.from_dict(dict(
        model=str(tiny_model_dir), device="cpu", requests=3, rate=100.0, prompt_len=24, prompt_len_max=40,
        output_len=6, output_len_max=8, num_blocks=48, block_size=8, seed=1, policy="quest", budget=8,
        dense_layers=0, stats=True))
    s = Simulation(cfg)
    s.KEEP_SELECTION_DETAIL = 3
    recs = s.run()
    with_sel = [r for r in recs if r.selection]
    assert len(with_sel) > 3
    # the newest records keep their columns; older ones only the per-layer summary
    kept = [i for i, r in enumerate(recs) if any(x.detail is not None for x in r.selection)]
    assert kept and min(kept) >= len(recs) - 3
    assert all(x.detail is None and x.records for r in recs[:-3] for x in r.selection)
    xs = {e["args"]["step"]: e["args"] for e in build_trace(recs)["traceEvents"] if e["ph"] == "X"}
    for r in with_sel:
        assert xs[r.step]["selection_records"] == sum(sum(x.records) for x in r.selection)
