"""Hypothesis over every file of a model folder the loaders read besides config.json
(fuzzed in test_model_folder_checks.py): the tokenizer, its side files, the generation
config and the safetensors index; and over a training checkpoint's JSON state. The
property: it loads, or it raises the project's one error type naming the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinyserve_core.errors import TinyServeError
from tinyserve_core.model import load_model
from hf_fixtures import make_hf_folder

FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors.index.json"]

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4), max_leaves=16)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-good") / "m"
    make_hf_folder(path, "linear")
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return path


def _content(draw_kind, data, original: bytes):
    if draw_kind == "bytes":
        return data.draw(st.binary(max_size=200))
    if draw_kind == "json":
        return json.dumps(data.draw(_json)).encode()
    cut = data.draw(st.integers(0, max(len(original), 1)))
    junk = data.draw(st.sampled_from([b"", b"]", b"}", b",", b"\xff", b"[[[", b'"', b"1e999", b"NaN"]))
    return original[:cut] + junk + original[cut + data.draw(st.integers(0, 8)):]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_model_folder_files_load_or_one_error(good, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz") / "m"
    shutil.copytree(good, folder)
    name = data.draw(st.sampled_from(FILES))
    path = folder / name
    original = path.read_bytes() if path.exists() else b'{"weight_map": {"x": "model.safetensors"}}'
    path.write_bytes(_content(data.draw(st.sampled_from(["bytes", "json", "mutate"])), data, original))
    try:
        load_model(folder)
    except TinyServeError as e:
        assert str(folder) in str(e) and "\n" not in str(e), str(e)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import argparse

    import numpy as np
    import torch

    from tinyserve_core.model.config import ModelConfig
    from tinyserve_core.model.llama import LlamaForCausalLM
    from tinyserve_core.model.train.checkpoint import save_checkpoint
    from tinyserve_core.model.train.train_lm import make_optimizer

    class Sampler:
        rng = np.random.default_rng(0)

        def state(self):
            return self.rng.bit_generator.state

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
                      max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("ck") / "ck"
    args = argparse.Namespace(size="tiny", context=128, batch=4, vocab_size=512, out="x")
    save_checkpoint(path, model, make_optimizer(model, 1e-2, 0.1, fused=False), Sampler(), 3, 1.5,
                    [{"step": 3}], args)
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_state_loads_or_one_error(checkpoint, tmp_path_factory, data):
    from tinyserve_core.model.train.checkpoint import STATE_FILE, load_checkpoint

    folder = tmp_path_factory.mktemp("fuzz") / "ck"
    shutil.copytree(checkpoint, folder)
    state = folder / STATE_FILE
    state.write_bytes(_content(data.draw(st.sampled_from(["bytes", "json", "mutate"])), data, state.read_bytes()))
    try:
        load_checkpoint(folder)
    except TinyServeError as e:
        assert str(folder) in str(e) and "\n" not in str(e), str(e)
