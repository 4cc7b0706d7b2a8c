"""Hostile model folders: config.json, tokenizer files, safetensors index and weights
are read through the loaders and checked for types and ranges; every problem is one
ModelLoadError/InputFileError naming the file and the field, exit 2 from every command
that loads a model. config.json is fuzzed with hypothesis."""

from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file

from tinyserve_core.cli import main
from tinyserve_core.errors import InputFileError, ModelLoadError, TinyServeError
from tinyserve_core.model import ModelConfig, default_model_dir, load_model
from tinyserve_core.model.loader import check_finite, read_safetensors

BASE = dict(model_type="llama", vocab_size=100, hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4)


def _edit(path, name, **changes):
    d = json.loads((path / name).read_text()) if (path / name).exists() else {}
    d.update(changes)
    (path / name).write_text(json.dumps(d))


def _load_error(path, kind=ModelLoadError):
    with pytest.raises(kind) as e:
        load_model(path)
    return e.value


# -- config.json --------------------------------------------------------------------------

@pytest.mark.parametrize("change, field, problem", [
    ({"eos_token_id": "abc"}, "eos_token_id", "token id"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id", "token id"),
    ({"eos_token_id": 100}, "eos_token_id", "outside the vocabulary"),
    ({"bos_token_id": -1}, "bos_token_id", "outside the vocabulary"),
    ({"pad_token_id": "x"}, "pad_token_id", "integer or null"),
    ({"rms_norm_eps": True}, "rms_norm_eps", "positive number"),
    ({"rms_norm_eps": "1e-5"}, "rms_norm_eps", "positive number"),
    ({"rope_theta": float("inf")}, "rope_theta", "finite positive"),
    ({"rope_theta": float("nan")}, "rope_theta", "finite positive"),
    ({"rope_theta": 0}, "rope_theta", "finite positive"),
    ({"rope_theta": -5.0}, "rope_theta", "finite positive"),
    ({"rope_theta": 10 ** 400}, "rope_theta", "finite positive"),
    ({"hidden_size": 1 << 20}, "hidden_size", "over the limit of 65536"),
    ({"vocab_size": 1 << 30}, "vocab_size", "over the limit"),
    ({"hidden_size": 64.0}, "hidden_size", "positive integer"),
    ({"num_hidden_layers": True}, "num_hidden_layers", "positive integer"),
    ({"max_position_embeddings": 1 << 40}, "max_position_embeddings", "over the limit"),
    ({"max_position_embeddings": -1}, "max_position_embeddings", "positive integer"),
    ({"num_key_value_heads": 3}, "num_key_value_heads", "does not divide"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings", "true or false"),
    ({"hidden_act": ["silu"]}, "hidden_act", "not supported"),
    ({"torch_dtype": 16}, "torch_dtype", "string or null"),
    ({"rope_scaling": [2.0]}, "rope_scaling", "object or null"),
    ({"rope_scaling": {"rope_type": "linear", "factor": True}}, "rope_scaling.factor", "positive number"),
    ({"rope_scaling": {"rope_type": ["linear"], "factor": 2}}, "rope_scaling.rope_type", "not supported"),
    ({"rope_parameters": [1]}, "rope_parameters", "expected an object"),
    ({"partial_rotary_factor": True}, "partial_rotary_factor", "not supported"),
    ({"model_type": "mistral", "sliding_window": "4k"}, "sliding_window", "integer or null"),
    ({"model_type": ["llama"]}, "model_type", "not supported"),
])
def test_config_fields_checked(change, field, problem):
    with pytest.raises(ModelLoadError) as e:
        ModelConfig.from_dict({**BASE, **change}, "m/config.json")
    assert e.value.path == "m/config.json" and e.value.field == field, e.value
    assert problem in e.value.message and str(e.value).startswith(f"m/config.json: {field}: ")


def test_hf_token_id_spellings_accepted():
    assert ModelConfig.from_dict({**BASE, "eos_token_id": [1, 2], "bos_token_id": 0}).eos_token_id == [1, 2]
    assert ModelConfig.from_dict({**BASE, "eos_token_id": [], "pad_token_id": -1}).pad_token_id == -1


@pytest.mark.parametrize("raw, problem", [
    (b'{"rope_theta": Infinity}', "Infinity is not a number"),
    (b'{"rope_theta": NaN}', "NaN is not a number"),
    (b'{"rms_norm_eps": 1e400}', "out of range"),
    (b'{"hidden_size": ' + b"9" * 400 + b"}", "400 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"model_type": "ll\xffama"}', "not UTF-8"),
])
def test_config_file_read_through_loaders(folder, raw, problem):
    (folder / "config.json").write_bytes(raw)
    e = _load_error(folder, InputFileError)
    assert e.path == str(folder / "config.json") and problem in str(e)


def test_config_that_is_a_directory(folder):
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    assert "is a directory" in str(_load_error(folder, InputFileError))


# -- tokenizer files ------------------------------------------------------------------------

@pytest.mark.parametrize("name, change, field", [
    ("generation_config.json", {"eos_token_id": "abc"}, "eos_token_id"),
    ("generation_config.json", {"eos_token_id": [1, None]}, "eos_token_id"),
    ("generation_config.json", {"eos_token_id": 10 ** 6}, "eos_token_id"),
    ("generation_config.json", {"bos_token_id": [0]}, "bos_token_id"),
])
def test_tokenizer_side_files_checked(folder, name, change, field):
    _edit(folder, name, **change)
    e = _load_error(folder)
    assert e.path == str(folder / name) and e.field == field


def test_tokenizer_files_read_through_loaders(folder):
    (folder / "tokenizer_config.json").write_bytes(b'{"eos_token": "\xfe"}')
    assert "not UTF-8" in str(_load_error(folder, InputFileError))
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "tokenizer.json").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in str(_load_error(folder, InputFileError))
    (folder / "tokenizer.json").write_text('{"model": 3}')
    e = _load_error(folder)
    assert e.path == str(folder / "tokenizer.json") and "\n" not in str(e)


def test_tokenizer_larger_than_the_model_is_refused(folder):
    n = json.loads((folder / "config.json").read_text())["vocab_size"]
    from tinyserve_core.model import Tokenizer
    size = Tokenizer.from_dir(folder).vocab_size
    _edit(folder, "config.json", vocab_size=size - 1, eos_token_id=1, bos_token_id=0)
    e = _load_error(folder)
    assert e.path == str(folder / "tokenizer.json") and e.field == "vocab_size"
    assert f"{size} tokens" in e.message and f"vocab_size {size - 1}" in e.message and n >= size


# -- weights ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_named(folder, bad):
    sd = load_file(str(folder / "model.safetensors"))
    key = "model.layers.1.mlp.up_proj.weight"
    sd[key][3, 5] = bad
    save_file(sd, str(folder / "model.safetensors"))
    e = _load_error(folder)
    assert e.path == str(folder / "model.safetensors") and e.field == f"tensor {key}"
    assert ("1 NaN" if bad != bad else "1 infinite") in e.message


def test_finite_check_is_cheap_on_the_shipped_model():
    model, _ = load_model(default_model_dir())
    tensors = read_safetensors(default_model_dir())
    took = min(_timed(lambda: check_finite(model, tensors, default_model_dir())) for _ in range(3))
    n = sum(p.numel() for p in model.parameters())
    print(f"finite check over {n} float32 weights: {took * 1e3:.1f} ms")
    assert took < 0.5


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.parametrize("index, problem", [
    ('{"weight_map": {"a": "../../etc/x.safetensors"}}', "file name in the model folder"),
    ('{"weight_map": {"a": ["model.safetensors"]}}', "file name in the model folder"),
    ('{"weight_map": []}', "tensor name -> shard"),
    ('["weight_map"]', "tensor name -> shard"),
])
def test_safetensors_index_checked(folder, index, problem):
    (folder / "model.safetensors.index.json").write_text(index)
    e = _load_error(folder)
    assert e.field == "weight_map" and problem in e.message


def test_safetensors_index_read_through_loaders(folder):
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a": NaN}}')
    assert "NaN" in str(_load_error(folder, InputFileError))


# -- every command that loads a model: one line, exit 2 ------------------------------------------

@pytest.mark.parametrize("argv", [
    ["generate", "hello", "--device", "cpu"],
    ["simulate", "--device", "cpu"],
    ["eval", "lm", "--device", "cpu"],
    ["bench", "engine", "--device", "cpu"],
])
def test_commands_refuse_a_bad_model_in_one_line(folder, argv, capsys):
    _edit(folder, "config.json", rms_norm_eps=True)
    assert main([*argv, "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder / 'config.json'}: rms_norm_eps: " in err, err


# -- fuzz ----------------------------------------------------------------------------------------

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30), st.integers(-5, 300),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                    st.sampled_from(["llama", "qwen2", "mistral", "linear", "llama3", "silu", "default"]))
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=8)
_KEYS = sorted({*BASE, "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
                "rope_parameters", "eos_token_id", "bos_token_id", "pad_token_id", "tie_word_embeddings",
                "max_position_embeddings", "hidden_act", "attention_bias", "sliding_window",
                "partial_rotary_factor", "torch_dtype", "use_sliding_window"})
_VALID = {**BASE, "num_key_value_heads": 2, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0}, "eos_token_id": [1, 2], "bos_token_id": 0}


def _loads_or_names_a_field(tmp_path, doc) -> None:
    f = tmp_path / "config.json"
    f.write_text(json.dumps(doc))
    try:
        ModelConfig.from_dir(tmp_path)
    except ModelLoadError as e:
        assert e.path == str(f) and (e.field or e.message.startswith("expected a JSON object")), e
    except InputFileError as e:
        assert e.path == str(f) and ": " in e.message, e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_json, st.dictionaries(st.sampled_from(_KEYS), _json, max_size=12)))
def test_fuzz_random_config_json(tmp_path, doc):
    _loads_or_names_a_field(tmp_path, doc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(_KEYS), _json | _scalar, min_size=1, max_size=3),
       drops=st.lists(st.sampled_from(_KEYS), max_size=2))
def test_fuzz_mutated_valid_config(tmp_path, changes, drops):
    doc = {**_VALID, **changes}
    for k in drops:
        doc.pop(k, None)
    _loads_or_names_a_field(tmp_path, doc)


def test_every_model_error_is_a_tinyserve_error():
    assert issubclass(ModelLoadError, TinyServeError) and issubclass(InputFileError, TinyServeError)
