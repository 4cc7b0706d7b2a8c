"""Loading and saving model folders; every bad folder gives one error naming the file
and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from tinyserve_core.errors import InputFileError, ModelLoadError
from tinyserve_core.model import default_model_dir, load_model, save_model
from hf_fixtures import make_hf_folder


def load_error(path) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as e:
        load_model(path)
    return e.value


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    for k, v in changes.items():
        if v is ...:
            del cfg[k]
    (path / "config.json").write_text(json.dumps(cfg))


def edit_weights(path, fn):
    sd = load_file(str(path / "model.safetensors"))
    fn(sd)
    save_file(sd, str(path / "model.safetensors"))


def test_missing_folder(tmp_path):
    e = load_error(tmp_path / "nope")
    assert "nope" in e.path and "not found" in e.message


def _unlink(name):
    return lambda folder: (folder / name).unlink()


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


def _truncate(name, size):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:size])


def _config(**changes):
    return lambda folder: edit_config(folder, **changes)


def _weights(fn):
    return lambda folder: edit_weights(folder, fn)


def _shrink_norm(sd):
    sd["model.norm.weight"] = sd["model.norm.weight"][:10].clone()


# (how the folder is broken, the file the error must name or None, words its message must hold)
BROKEN = [
    pytest.param(_unlink("config.json"), "config.json", ["missing"], id="missing_config"),
    pytest.param(_config(model_type="gpt2"), "config.json", ["model_type", "gpt2"], id="unsupported_model_type"),
    pytest.param(_config(hidden_size=...), "config.json", ["hidden_size"], id="missing_config_key"),
    pytest.param(_config(num_key_value_heads=3), None, ["num_key_value_heads", "divide"], id="heads_not_dividing"),
    pytest.param(_config(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}), None,
                 ["rope_type", "yarn"], id="unsupported_rope_type"),
    pytest.param(_unlink("model.safetensors"), None, ["safetensors"], id="missing_weights"),
    pytest.param(_truncate("model.safetensors", 200), "model.safetensors", ["corrupt"], id="corrupt_safetensors"),
    pytest.param(_weights(lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight")), None,
                 ["missing tensor", "model.layers.1.mlp.up_proj.weight"], id="missing_tensor_named"),
    pytest.param(_weights(lambda sd: sd.__setitem__("model.layers.0.extra.weight", torch.zeros(2))),
                 "model.safetensors", ["model.layers.0.extra.weight"], id="unexpected_tensor_named"),
    pytest.param(_weights(_shrink_norm), None, ["model.norm.weight", "(10,)", "(64,)"], id="misshaped_tensor_named"),
    pytest.param(_unlink("tokenizer.json"), "tokenizer.json", ["missing"], id="missing_tokenizer"),
    pytest.param(_write("tokenizer.json", '{"version": "1.0", "model": 7}'), "tokenizer.json", [],
                 id="corrupt_tokenizer"),
]


@pytest.mark.parametrize("breaks, file, words", BROKEN)
def test_broken_folder_names_the_file_and_the_problem(folder, breaks, file, words):
    breaks(folder)
    e = load_error(folder)
    if file is not None:
        assert e.path.endswith(file)
    for w in words:
        assert w in e.message


def test_corrupt_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputFileError) as e:   # the loaders' one error for unreadable files
        load_model(folder)
    assert e.value.path.endswith("config.json") and "invalid JSON" in e.value.message


def test_sharded_checkpoint_loads(folder, good):
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(folder / name))
        weight_map.update({k: name for k in ks})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded, _ = load_model(folder)
    single, _ = load_model(good)
    x = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(sharded.forward_dense(x), single.forward_dense(x))
    (folder / "model-00002-of-00002.safetensors").unlink()
    e = load_error(folder)
    assert e.path.endswith("model-00002-of-00002.safetensors") and "missing" in e.message


@pytest.mark.parametrize("kind", ["qwen2", "llama3"])
def test_save_model_round_trips_through_transformers(tmp_path, kind):
    hf = make_hf_folder(tmp_path / "src", kind)
    model, tok = load_model(tmp_path / "src")
    save_model(model, tok, tmp_path / "dst")
    again, tok2 = load_model(tmp_path / "dst")
    hf2 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    x = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        ref = hf(x).logits
        assert torch.equal(again.forward_dense(x), model.forward_dense(x))
        assert (hf2(x).logits - ref).abs().max() < 1e-5
    assert tok2.encode("hello world") == tok.encode("hello world")
    assert tok2.eos_token_id == tok.eos_token_id == 1 and tok2.bos_token_id == 0
    if kind == "qwen2":  # tied: the embedding is stored once and lm_head follows it
        assert "lm_head.weight" not in load_file(str(tmp_path / "dst" / "model.safetensors"))
        assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()


def test_bf16_load_keeps_rope_in_float32(good):
    model, _ = load_model(good, dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.inv_freq.dtype == torch.float32
    ref, _ = load_model(good)
    assert torch.equal(model.model.inv_freq, ref.model.inv_freq)


def test_tokenizer_round_trip_and_special_ids(good):
    _, tok = load_model(good)
    text = "Prefix caching reuses blocks: ünïcödé ✓"
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_id == 1 and tok.bos_token_id == 0


def test_default_model_dir_is_package_data():
    import tinyserve_core

    d = default_model_dir()
    assert d == Path(tinyserve_core.__file__).parent / "assets" / "models" / "tinyserve-lm"
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
