"""Fuzzing the scene readers: random bytes, random JSON and mutated copies of the shipped
room.json and room.queries.jsonl either load or raise the project's error type naming the
file and a field; nothing else escapes."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinyserve_core.errors import InputFileError, TinyServeError
from tinyserve_core.eval.scene import default_queries, load_queries
from tinyserve_core.scene.spec import load_scene, parse_scene

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ROOM = json.loads(open(load_scene().path).read())
LABELS = load_scene().labels[1:]
QUERIES = [json.loads(s) for s in default_queries("room").read_text().splitlines() if s.strip()]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.text(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=12)


def _mutate(doc, data):
    """Replace one randomly chosen node of a deep copy of doc with a random value."""
    doc = json.loads(json.dumps(doc))
    parent, key = None, None
    node = doc
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys))
        node = node[key]
    if parent is None:
        return data.draw(json_values)
    if data.draw(st.booleans()):
        parent[key] = data.draw(json_values)
    elif isinstance(parent, dict):
        del parent[key]
    return doc


def _check(fn, path):
    try:
        fn()
    except TinyServeError as e:
        assert isinstance(e, InputFileError), repr(e)
        assert e.path == str(path) and ": " in e.message, str(e)
        assert "\n" not in str(e)


@pytest.fixture
def out(tmp_path):
    return tmp_path


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes(out, data):
    for name, fn in (("s.json", load_scene), ("q.jsonl", lambda p: load_queries(p, LABELS))):
        p = out / name
        p.write_bytes(data)
        _check(lambda: fn(p), p)


@FUZZ
@given(value=json_values)
def test_random_json(out, value):
    p = out / "s.json"
    p.write_text(json.dumps(value))
    _check(lambda: load_scene(p), p)
    _check(lambda: parse_scene(value, path=str(p)), p)   # NaN/inf reach the validation too
    q = out / "q.jsonl"
    q.write_text(json.dumps(value) + "\n")
    _check(lambda: load_queries(q, LABELS), q)


@FUZZ
@given(data=st.data())
def test_mutated_room(out, data):
    doc = _mutate(ROOM, data)
    p = out / "room.json"
    p.write_text(json.dumps(doc))
    _check(lambda: load_scene(p), p)
    _check(lambda: parse_scene(doc, path=str(p)), p)


@FUZZ
@given(data=st.data())
def test_mutated_queries(out, data):
    i = data.draw(st.integers(0, len(QUERIES) - 1))
    lines = [json.dumps(q) for q in QUERIES]
    lines[i] = json.dumps(_mutate(QUERIES[i], data))
    p = out / "room.queries.jsonl"
    p.write_text("\n".join(lines) + "\n")
    _check(lambda: load_queries(p, LABELS), p)
