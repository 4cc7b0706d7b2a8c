"""Fuzzing the session-config and replay loaders: random bytes, random JSON
and mutated valid files either load or raise the one InputFileError that names the
file (and line) and the field: never another exception, never a hang."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings, strategies as st

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.workloads import ModelLimits, WorkloadSpec, generate_workload, load_replay, save_replay
from tinyserve_core.errors import InputFileError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# `field: problem`: a known key or one of the loader's own names, or an unknown key
# quoted as written
_FIELD = re.compile(r'^([A-Za-z_][\w-]*|".*"): \S', re.S)

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10, 5000)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
            | st.sampled_from(["8", "1e400", "true", "nan", "-1", "replay", "cpu", "quest", ""]))
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=12)


def _one_error(fn, path):
    try:
        return fn()
    except InputFileError as e:
        assert e.path == str(path), e
        assert _FIELD.match(e.message), e.message
        return None


def _mutate(text: str, at: int, junk: str, drop: int) -> str:
    at %= len(text) + 1
    return text[:at] + junk + text[at + drop:]


_junk = st.sampled_from(["", "}", "{", "]", ",", ":", '"', "\x00", "ÿ", "1e999", "-", "null",
                         "9" * 50, "[[[[", "\n", '"n": 65,'])

# -- session configs ------------------------------------------------------------------

_KEYS = list(EngineConfig().to_dict())
_VALID = json.dumps(EngineConfig.from_dict({"block_size": 8, "policy": "quest", "budget": 0.5}).to_dict(), indent=2)


@FUZZ
@given(st.binary(max_size=400))
def test_config_random_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("cfg") / "s.json"
    p.write_bytes(data)
    _one_error(lambda: EngineConfig.load(p), p)


@FUZZ
@given(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _json, max_size=6))
def test_config_random_json(tmp_path_factory, values):
    p = tmp_path_factory.mktemp("cfg") / "s.json"
    p.write_text(json.dumps(values))
    cfg = _one_error(lambda: EngineConfig.load(p), p)
    if cfg is not None:
        cfg.validate()


@FUZZ
@given(st.integers(0, 10_000), _junk, st.integers(0, 3))
def test_config_mutated_valid_file(tmp_path_factory, at, junk, drop):
    p = tmp_path_factory.mktemp("cfg") / "s.json"
    p.write_text(_mutate(_VALID, at, junk, drop), encoding="utf-8")
    _one_error(lambda: EngineConfig.load(p), p)


# -- replay files ---------------------------------------------------------------------

# A small model: short prompts keep corpus cuts cheap, and the toy tokenizer below
# yields ids past the vocabulary for long words, so the vocabulary check is exercised.
LIMITS = ModelLimits(context=48, vocab_size=12)


def tokenize(text: str) -> list[int]:
    return [len(w) for w in text.split()]


def _load(p):
    return load_replay(p, tokenize=tokenize, limits=LIMITS)


_REPLAY_KEYS = ["arrival_s", "prompt", "prompt_token_ids", "prompt_len", "max_tokens", "n", "salt", "group"]
_replay_line = st.dictionaries(st.sampled_from(_REPLAY_KEYS) | st.text(max_size=5),
                               _json | st.lists(st.integers(-2, 20), max_size=6), max_size=6)
_VALID_REPLAY = "".join(json.dumps(o) + "\n" for o in [
    {"arrival_s": 0.5, "prompt": "a few short words", "max_tokens": 3, "n": 2},
    {"arrival_s": 0, "prompt_token_ids": [1, 2, 3], "max_tokens": 1, "salt": "t", "group": 1},
    {"arrival_s": 2, "prompt_len": 8, "max_tokens": 4},
])


@FUZZ
@given(st.binary(max_size=400))
def test_replay_random_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("rp") / "r.jsonl"
    p.write_bytes(data)
    _one_error(lambda: _load(p), p)


@FUZZ
@given(st.lists(_replay_line, min_size=1, max_size=4))
def test_replay_random_json_lines(tmp_path_factory, lines):
    p = tmp_path_factory.mktemp("rp") / "r.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in lines))
    reqs = _one_error(lambda: _load(p), p)
    for r in reqs or ():   # what loads fits the model
        assert 1 <= r.prompt_len <= LIMITS.max_prompt_len and 1 <= r.n <= 64
        assert all(0 <= t < LIMITS.vocab_size for t in r.prompt_token_ids)


@FUZZ
@given(st.integers(0, 10_000), _junk, st.integers(0, 3))
def test_replay_mutated_valid_file(tmp_path_factory, at, junk, drop):
    p = tmp_path_factory.mktemp("rp") / "r.jsonl"
    p.write_text(_mutate(_VALID_REPLAY, at, junk, drop), encoding="utf-8")
    _one_error(lambda: _load(p), p)


def test_the_valid_files_load(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(_VALID_REPLAY)
    assert len(_load(p)) == 3
    save_replay(generate_workload(WorkloadSpec(requests=3, prompt_len=5, prompt_len_max=9)), p)
    assert len(load_replay(p)) == 3
    c = tmp_path / "s.json"
    c.write_text(_VALID)
    assert EngineConfig.load(c).selection.policy == "quest"
