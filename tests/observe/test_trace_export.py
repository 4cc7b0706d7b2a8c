"""Chrome Trace JSON: valid by the rules Perfetto and chrome://tracing rely on, the
request phases nested right, live export, and a validator that catches broken traces."""

from __future__ import annotations

import json

import pytest
from synthetic_records import synthetic_run

from tinyserve_core.observe.trace import TraceWriter, build_trace, validate_trace, write_chrome_trace


def _by_ph(trace, ph):
    return [e for e in trace["traceEvents"] if e["ph"] == ph]


def test_trace_is_valid_and_round_trips_through_json(run_records, tmp_path):
    trace = build_trace(run_records)
    assert validate_trace(trace) == []
    path = tmp_path / "t.json"
    write_chrome_trace(run_records, path)
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(trace))
    assert validate_trace(loaded) == []
    assert loaded["displayTimeUnit"] == "ms"


def test_metadata_names_process_and_threads(run_records):
    meta = {(e["name"], e.get("tid")): e["args"] for e in _by_ph(build_trace(run_records), "M")}
    assert meta[("process_name", 0)]["name"] == "TinyServe engine"
    assert {a["name"] for (n, _), a in meta.items() if n == "thread_name"} == {"engine steps", "requests"}


def test_engine_steps_are_complete_events_in_microseconds(run_records):
    xs = _by_ph(build_trace(run_records), "X")
    work = [r for r in run_records if r.phase != "idle"]
    assert len(xs) == len(work)                                   # idle gaps are not slices
    for x, r in zip(xs, work):
        assert x["name"] == r.phase and x["args"]["step"] == r.step
        assert x["ts"] == pytest.approx(r.t_start * 1e6, abs=1e-3)
        assert x["dur"] == pytest.approx((r.t_end - r.t_start) * 1e6, abs=2e-3)
        assert x["args"]["op_ms"]["attention"] == pytest.approx(6.0)
        assert x["args"]["events"]["schedule"] == 1


def test_requests_are_nested_async_slices(run_records):
    trace = build_trace(run_records)
    timings = {t.request_id: t for r in run_records for t in r.finished}
    by_id: dict[int, list[dict]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] in "be":
            assert e["cat"] == "request"
            by_id.setdefault(e["id"], []).append(e)
    assert len(by_id) == len(timings) == 5
    for events in by_id.values():
        outer_b, outer_e = events[0], events[-1]
        t = timings[outer_b["args"]["request_id"]]
        assert outer_b["name"] == outer_e["name"] == f"request {t.request_id}"
        assert outer_b["ts"] == pytest.approx(t.arrival_s * 1e6, abs=1e-3)
        assert outer_e["ts"] == pytest.approx(t.finish_s * 1e6, abs=1e-3)
        phases = {}
        for b, e in zip(events[1:-1:2], events[2:-1:2]):
            assert (b["ph"], e["ph"], b["name"]) == ("b", "e", e["name"])
            assert outer_b["ts"] <= b["ts"] <= e["ts"] <= outer_e["ts"]
            phases[b["name"]] = (b["ts"], e["ts"])
        assert phases["prefill"] == pytest.approx((t.first_scheduled_s * 1e6, t.first_token_s * 1e6), abs=1e-3)
        if t.num_output_tokens > 1:
            assert phases["decode"][1] == pytest.approx(t.finish_s * 1e6, abs=1e-3)
        else:
            assert "decode" not in phases                       # an empty phase is left out
        assert outer_b["args"]["ttft_ms"] == pytest.approx(t.ttft_s * 1e3)


def test_counters_carry_the_metrics(run_records):
    counters = _by_ph(build_trace(run_records), "C")
    names = {c["name"] for c in counters}
    assert {"KV cache usage (%)", "requests", "throughput (tok/s)", "prefix cache hit rate (%)",
            "memory waste (%)", "blocks", "preemptions", "cow copies"} <= names
    last = {c["name"]: c["args"] for c in counters}
    final = run_records[-1].metrics
    assert last["preemptions"]["total"] == final.num_preemptions == 1
    assert last["prefix cache hit rate (%)"]["hit_rate"] == pytest.approx(
        100 * final.prefix_cache_hits / final.prefix_cache_queries)
    kv = [c["args"]["usage"] for c in counters if c["name"] == "KV cache usage (%)"]
    assert max(kv) == pytest.approx(100 * max(r.metrics.kv_cache_usage_perc for r in run_records))


def test_preemption_is_an_instant_event(run_records):
    (inst,) = [e for e in _by_ph(build_trace(run_records), "i") if e["name"].startswith("preempt")]
    assert inst["s"] == "t" and inst["args"]["num_blocks_freed"] == 3


def test_clock_noise_at_step_edges_never_breaks_nesting():
    records = synthetic_run([(0.0, 8, 20), (0.001, 8, 12)], arrive_step_noise=4e-7)
    assert records[0].t_end > records[1].t_start                  # the overlap is real
    assert validate_trace(build_trace(records)) == []


def test_live_writer_saves_a_valid_trace_mid_run(tmp_path):
    records = synthetic_run([(0.0, 10, 8), (0.0, 10, 30), (0.05, 10, 5)])
    w = TraceWriter(metadata={"model": "synthetic"})
    path = tmp_path / "live.json"
    half = len(records) // 3
    for r in records[:half]:
        w.add(r)
    w.save(path)
    mid = json.loads(path.read_text())
    assert validate_trace(mid) == []
    unfinished = [e for e in mid["traceEvents"] if e["ph"] == "b" and e.get("args", {}).get("unfinished")]
    assert {e["args"]["request_id"] for e in unfinished} == {"r0", "r1", "r2"} - {
        t.request_id for r in records[:half] for t in r.finished}
    assert mid["otherData"] == {"model": "synthetic", "num_steps": half}
    for r in records[half:]:
        w.add(r)
    w.save(path)
    done = json.loads(path.read_text())
    assert validate_trace(done) == []
    assert not any(e.get("args", {}).get("unfinished") for e in done["traceEvents"])
    assert not (tmp_path / "live.json.tmp").exists()


def test_saving_between_any_two_steps_gives_a_valid_trace():
    """The GUI exports while a run goes on: after every step the trace is complete
    (open requests are closed at the last step)."""
    records = synthetic_run([(0.002 * i, 12, 6 + i % 5) for i in range(40)])
    w = TraceWriter()
    for r in records:
        w.add(r)
        assert validate_trace(w.trace()) == []
    assert w.trace()["traceEvents"] and w.num_steps == len(records)


# -- the validator fails on what viewers would misread ---------------------------------

def _ev(ph, name="a", ts=0.0, **kw):
    e = {"name": name, "ph": ph, "ts": ts, "pid": 1, "tid": 1}
    e.update(kw)
    return e


@pytest.mark.parametrize("events, needle", [
    ([_ev("X", dur=5), _ev("X", ts=3, dur=5)], "overlaps"),
    ([_ev("X")], "'dur'"),
    ([_ev("X", dur=-1)], "'dur'"),
    ([_ev("X", ts=-5, dur=1)], "'ts'"),
    ([_ev("X", ts=float("nan"), dur=1)], "'ts'"),
    ([{"name": "a", "ph": "X", "ts": 0, "dur": 1, "pid": 1}], "'tid'"),
    ([_ev("b", cat="request", id=1), _ev("b", "c", ts=1, cat="request", id=1),
      _ev("e", ts=2, cat="request", id=1), _ev("e", "c", ts=3, cat="request", id=1)], "innermost"),
    ([_ev("b", cat="request", id=1)], "never closed"),
    ([_ev("e", cat="request", id=1)], "without an open"),
    ([_ev("b", id=1)], "'cat'"),
    ([_ev("b", cat="request")], "'id'"),
    ([_ev("b", ts=5, cat="r", id=1), _ev("e", ts=4, cat="r", id=1)], "back in time"),
    ([_ev("X", ts=10, dur=1), _ev("X", ts=2, dur=1)], "back in time"),
    ([_ev("C", args={"v": "high"})], "counter"),
    ([_ev("C")], "counter"),
    ([_ev("Q")], "unknown ph"),
    ([_ev("i", s="x")], "scope"),
    ([{"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {}}], "args.name"),
    ([{"name": "a", "ph": "X", "ts": 0, "dur": 1, "pid": "1", "tid": 1}], "'pid'"),
])
def test_validator_rejects_broken_traces(events, needle):
    problems = validate_trace({"traceEvents": events})
    assert problems and any(needle in p for p in problems), problems


def test_validator_accepts_proper_nesting_and_rejects_bad_containers():
    ok = [_ev("X", dur=10), _ev("X", "inner", ts=2, dur=3), _ev("X", "next", ts=10, dur=1),
          _ev("b", cat="r", id=7), _ev("b", "child", ts=1, cat="r", id=7),
          _ev("e", "child", ts=2, cat="r", id=7), _ev("e", ts=2, cat="r", id=7)]
    assert validate_trace({"traceEvents": ok}) == []
    assert validate_trace(ok) == []
    assert validate_trace({"events": []}) and validate_trace("trace")


def test_check_trace_command(run_records, tmp_path, capsys):
    """`tinyserve check-trace` (tinyserve_core.cli.trace) on this folder's synthetic run."""
    from tinyserve_core.cli import build_parser
    from tinyserve_core.errors import InputFileError

    p = build_parser()

    def check(path):
        args = p.parse_args(["check-trace", str(path)])
        return args.func(args)

    good = tmp_path / "good.json"
    write_chrome_trace(run_records, good)
    assert check(good) == 0 and "valid" in capsys.readouterr().out
    broken = json.loads(good.read_text())
    broken["traceEvents"] = [e for e in broken["traceEvents"] if not (e["ph"] == "e" and e["id"] == 1)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    assert check(bad) == 1 and "never closed" in capsys.readouterr().out
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InputFileError):
        check(tmp_path / "junk.json")


def test_raising_validator(run_records):
    from tinyserve_core.observe.trace import validate_chrome_trace

    trace = build_trace(run_records)
    validate_chrome_trace(trace)
    trace["traceEvents"].append({"name": "x", "ph": "X", "ts": 0, "pid": 1, "tid": 1})
    with pytest.raises(ValueError, match="'dur'"):
        validate_chrome_trace(trace)


def test_step_numbers_in_the_trace_find_the_step_in_the_gui(run_records):
    """Preemptions and finished requests carry the engine step (the GUI timeline's)."""
    from tinyserve_core.observe.trace import build_trace
    events = build_trace(run_records)["traceEvents"]
    by_step = {r.step: r for r in run_records}
    preempts = [e for e in events if e["ph"] == "i" and e["name"].startswith("preempt")]
    assert preempts
    for e in preempts:
        assert any(x.kind == "preempt" for x in by_step[e["args"]["step"]].events)
    outer = [e for e in events if e["ph"] == "b" and e["name"].startswith("request ")
             and not e.get("args", {}).get("unfinished")]
    assert outer
    for e in outer:
        finished = [t.request_id for t in by_step[e["args"]["finish_step"]].finished]
        assert e["args"]["request_id"] in finished
