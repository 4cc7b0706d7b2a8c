"""The streamed trace: written step by step, complete after close() at any point (the
interrupt path of `simulate`), the same events as the in-memory trace."""

from __future__ import annotations

import json

import pytest
from synthetic_records import synthetic_run

from tinyserve_core.observe.trace import build_trace, validate_trace
from tinyserve_core.observe.trace_stream import StreamingTraceWriter


def _key(e):
    return json.dumps(e, sort_keys=True)


def test_streamed_trace_has_the_in_memory_trace_events(run_records, tmp_path):
    path = tmp_path / "t.json"
    w = StreamingTraceWriter(path, metadata={"model": "m"})
    for r in run_records:
        w.add(r)
    assert not path.exists()                        # nothing half-written at the target
    w.close()
    streamed = json.loads(path.read_text())
    assert validate_trace(streamed) == []
    mem = json.loads(json.dumps(build_trace(run_records, metadata={"model": "m"})))
    assert sorted(map(_key, streamed["traceEvents"])) == sorted(map(_key, mem["traceEvents"]))
    assert streamed["otherData"] == mem["otherData"] and streamed["displayTimeUnit"] == "ms"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_events_reach_the_disk_as_steps_arrive(tmp_path):
    """A long run does not hold its trace: the temporary file grows with the steps."""
    records = synthetic_run([(0.001 * i, 12, 6) for i in range(200)])
    w = StreamingTraceWriter(tmp_path / "t.json")
    for r in records:
        w.add(r)
    assert w._events == []                          # nothing kept in memory
    tmp = next(tmp_path.iterdir())
    w._out.file.flush()
    assert tmp.stat().st_size > 50_000
    w.close()


@pytest.mark.parametrize("cut", [0, 1, 5, 11])
def test_closing_after_any_step_gives_a_valid_trace(tmp_path, cut):
    records = synthetic_run([(0.002 * i, 12, 6 + i % 5) for i in range(20)])
    path = tmp_path / f"cut{cut}.json"
    w = StreamingTraceWriter(path)
    for r in records[:cut]:
        w.add(r)
    w.close()
    trace = json.loads(path.read_text())
    assert validate_trace(trace) == []
    assert trace["otherData"]["num_steps"] == len(records[:cut])


def test_abort_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("old")
    w = StreamingTraceWriter(path)
    w.add(synthetic_run([(0.0, 8, 2)])[0])
    w.abort()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.json"]
