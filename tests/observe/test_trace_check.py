"""check-trace on hostile traces: every malformed file gives a list of problems (exit 1)
or one line (exit 2), never a traceback; the validator is fuzzed with random trace-shaped
JSON and with mutations of our own writer's traces."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from synthetic_records import synthetic_run

from tinyserve_core.cli import main
from tinyserve_core.observe.trace import build_trace
from tinyserve_core.observe.trace_check import validate_trace


def _x(**kw):
    return {"name": "step", "ph": "X", "ts": 0, "dur": 1, "pid": 1, "tid": 1, **kw}


def _counter(**kw):
    return {"name": "kv", "ph": "C", "ts": 0, "pid": 1, "args": {"v": 1}, **kw}


def _meta(**kw):
    return {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "t"}, **kw}


def _doc(*events) -> str:
    return json.dumps({"traceEvents": list(events)})


# (file text, what the output must say, exit code): the 12 reported crashes and kin
HOSTILE = {
    "ph list": (_doc(_x(ph=["X"])), "unknown ph", 1),
    "ph object": (_doc(_x(ph={"X": 1})), "unknown ph", 1),
    "pid list": (_doc(_x(pid=[1])), "'pid' must be an integer", 1),
    "pid list on a counter": (_doc(_counter(pid=[1])), "'pid' must be an integer", 1),
    "counter name list": (_doc(_counter(name=["kv"])), "'name' must be a string", 1),
    "counter id list": (_doc(_counter(id=[1])), "counter 'id'", 1),
    "metadata name null": (_doc(_meta(name=None)), "'name' must be a string", 1),
    "metadata name int": (_doc(_meta(name=7)), "'name' must be a string", 1),
    "metadata name list": (_doc(_meta(name=["thread_name"])), "'name' must be a string", 1),
    "X without pid": (_doc({k: v for k, v in _x().items() if k != "pid"}), "'pid' must be an integer", 1),
    "async id list": (_doc({"name": "r", "ph": "b", "ts": 0, "pid": 1, "cat": "c", "id": [1]}), "'id'", 1),
    "ts past float range": (_doc(_x(ts=int("9" * 39))) .replace("9" * 39, "9" * 40 + "e300"),
                            "out of range", 2),
    "int ts of 5,000 digits": (_doc(_x()).replace('"ts": 0', '"ts": ' + "9" * 5000), "5000 digits", 2),
    "float dur past range": (_doc(_x()).replace('"dur": 1', '"dur": 1e400'), "out of range", 2),
    "Infinity ts": (_doc(_x()).replace('"ts": 0', '"ts": Infinity'), "Infinity is not a number", 2),
    "deep nesting": ('{"traceEvents": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper", 2),
    "not UTF-8": (None, "not UTF-8", 2),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_trace_is_one_line_or_problems(case, tmp_path, capsys):
    text, needle, code = HOSTILE[case]
    path = tmp_path / "t.json"
    if text is None:
        path.write_bytes(b'{"traceEvents": ["\xff"]}')
    else:
        path.write_text(text)
    assert main(["check-trace", str(path)]) == code
    out, err = capsys.readouterr()
    said = out if code == 1 else err
    assert needle in said and "Traceback" not in out + err
    if code == 2:
        assert err.count("\n") == 1 and f"{path}: trace: " in err or f"{path}:1: file: " in err


def test_directory_and_missing_file_are_one_line(tmp_path, capsys):
    assert main(["check-trace", str(tmp_path)]) == 2
    assert main(["check-trace", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "is a directory" in err[0] and "no such file" in err[1]


@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400), float("nan"), float("inf"), [1], None, True],
                         ids=["huge", "-huge", "nan", "inf", "list", "null", "bool"])
def test_validator_on_python_values_beyond_json(value):
    """Called directly (not through the loader) it still reports, never raises."""
    for ev in (_x(ts=value), _x(dur=value), _counter(args={"v": value})):
        assert validate_trace({"traceEvents": [ev]})
    if not isinstance(value, int) or isinstance(value, bool):
        assert validate_trace([_x(pid=value)]) and validate_trace([_x(tid=value)])


# -- fuzz ---------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
                     st.floats(), st.text(max_size=8),
                     st.sampled_from(["X", "B", "E", "b", "e", "n", "i", "I", "C", "M", "thread_name",
                                      "process_name", "g", "t"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)
_keys = st.sampled_from(["name", "ph", "ts", "dur", "pid", "tid", "cat", "id", "args", "s"])
_events = st.lists(st.dictionaries(_keys, _json, max_size=10) | _json, max_size=12)


@settings(max_examples=400, deadline=None)
@given(events=_events, wrap=st.booleans())
def test_fuzz_random_trace_shaped_json(events, wrap):
    problems = validate_trace({"traceEvents": events} if wrap else events)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


_VALID = build_trace(synthetic_run([(0.0, 32, 4), (0.0, 48, 6), (0.015, 20, 3), (0.2, 64, 5)],
                                   preempt_at_step=3))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_valid_traces(data):
    assert validate_trace(_VALID) == []
    events = json.loads(json.dumps(_VALID["traceEvents"]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(events) - 1))
        ev = events[i]
        how = data.draw(st.sampled_from(["set", "drop", "swap", "args"]))
        key = data.draw(_keys)
        if how == "set":
            ev[key] = data.draw(_json)
        elif how == "drop":
            ev.pop(key, None)
        elif how == "swap":
            j = data.draw(st.integers(0, len(events) - 1))
            events[i], events[j] = events[j], events[i]
        elif isinstance(ev.get("args"), dict) and ev["args"]:
            ev["args"][data.draw(st.sampled_from(sorted(ev["args"])))] = data.draw(_json)
    problems = validate_trace({"traceEvents": events})
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
