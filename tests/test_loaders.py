"""The one loader discipline: bounded, UTF-8 checked, JSON depth and numbers checked,
every problem an InputFileError naming path[:line] and field."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from tinyserve_core.errors import InputFileError
from tinyserve_core.loaders import MAX_JSON_DEPTH, iter_jsonl, load_json, read_text


def _raises(fn, path, match):
    with pytest.raises(InputFileError, match=match) as e:
        fn()
    assert e.value.path == str(path)
    return e.value


def test_missing_directory_device_and_oversize(tmp_path):
    _raises(lambda: read_text(tmp_path / "nope.json", max_bytes=10), tmp_path / "nope.json", "file: no such file")
    _raises(lambda: read_text(tmp_path, max_bytes=10), tmp_path, "file: is a directory")
    if os.path.exists("/dev/null"):
        _raises(lambda: read_text("/dev/null", max_bytes=10), "/dev/null", "not a regular file")
    big = tmp_path / "big.json"
    big.write_text("x" * 11)
    _raises(lambda: read_text(big, max_bytes=10), big, "11 bytes is over the limit of 10")


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    err = _raises(lambda: list(iter_jsonl(p, max_bytes=1000)), p, "not UTF-8")
    assert err.line == 2 and str(err).startswith(f"{p}:2: file: not UTF-8")


def test_bom_is_dropped(tmp_path):
    p = tmp_path / "c.json"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert load_json(p, max_bytes=100) == {"a": 1}


@pytest.mark.parametrize("text, problem", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
    ('{"x": ' + "9" * 5000 + "}", "5000 digits is out of range"),
    ('{"x": 1e400}', "out of range"),
    ('{"x": NaN}', "NaN is not a number JSON allows"),
    ('{"x": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"x": 1,}', "invalid JSON"),
])
def test_hostile_json(tmp_path, text, problem):
    p = tmp_path / "h.json"
    p.write_text(text)
    _raises(lambda: load_json(p, max_bytes=1 << 20, field="config"), p, problem)


def test_jsonl_lines_and_limits(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('# a comment\n\n{"a": 1}\n  {"a": 2}  \n{"a": \n')
    it = iter_jsonl(p, max_bytes=1000)
    assert [(c.line, o) for c, o in [next(it), next(it)]] == [(3, {"a": 1}), (4, {"a": 2})]
    err = _raises(lambda: next(it), p, "invalid JSON")
    assert err.line == 5
    p.write_text('{"a": "' + "x" * 100 + '"}\n')
    _raises(lambda: list(iter_jsonl(p, max_bytes=1000, max_line_chars=50)), p, "line: 109 characters")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_load_or_one_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fuzz") / "f.json"
    p.write_bytes(data)
    for fn in (lambda: load_json(p, max_bytes=1000), lambda: list(iter_jsonl(p, max_bytes=1000))):
        try:
            fn()
        except InputFileError as e:
            assert e.path == str(p) and ": " in e.message


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                     max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_json, st.integers(min_value=0, max_value=40), st.sampled_from(["", "]", "}", ",", "\x00", "ÿ", "[[["]))
def test_mutated_json_loads_or_one_error(tmp_path_factory, value, cut, junk):
    text = json.dumps(value)
    text = text[:cut] + junk + text[cut:]
    p = tmp_path_factory.mktemp("fuzz") / "m.json"
    p.write_text(text, encoding="utf-8")
    try:
        load_json(p, max_bytes=10_000)
    except InputFileError as e:
        assert e.path == str(p)
