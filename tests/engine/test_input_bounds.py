"""What cannot fit is refused before a run starts, with the limit in the message:
a context above the model's, a KV pool above the memory
free, replay requests the model cannot take (too many samples, ids outside its
vocabulary, prompts longer than its context)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tinyserve_core.cli import main
from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.engine import Engine
from tinyserve_core.errors import ConfigError
from tinyserve_core.kv import kv_cache
from tinyserve_core.model.loader import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


def engine(tiny, **kw) -> Engine:
    model, tok = tiny
    return Engine(EngineConfig.from_dict({"device": "cpu", "block_size": 4, "num_blocks": 64, **kw}),
                  model=model, tokenizer=tok)


def test_max_model_len_above_the_models_context_names_both(tiny):
    with pytest.raises(ConfigError) as e:
        engine(tiny, max_model_len=4096)
    assert e.value.field == "max_model_len"
    assert "4096 is above the model's context of 512" in e.value.message
    assert engine(tiny, max_model_len=512).max_model_len == 512


def test_a_pool_larger_than_memory_is_refused_before_allocating(tiny):
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        engine(tiny, num_blocks=1 << 24)
    assert time.perf_counter() - t < 5   # no block objects or tensors were built first
    assert e.value.field == "num_blocks"
    assert "GiB of cpu memory, over the limit of" in e.value.message and "blocks fit" in e.value.message


def test_the_pool_check_counts_bytes_per_memory(tiny, monkeypatch):
    model, _ = tiny
    cfg = model.config
    per_block = kv_cache.block_bytes(cfg.num_hidden_layers, 4, cfg.num_key_value_heads, cfg.head_dim,
                                     torch.float32)
    assert per_block == kv_cache.KVCache.for_model(cfg, 1, 4).bytes_per_block
    free = 100 * (per_block + kv_cache.HOST_BYTES_PER_BLOCK)
    monkeypatch.setattr(kv_cache, "available_bytes", lambda dev: free)
    kv_cache.check_pool_fits(cfg, 90, 4, torch.float32, torch.device("cpu"))   # 90% of 100
    with pytest.raises(ConfigError, match="at most 90 blocks fit"):
        kv_cache.check_pool_fits(cfg, 91, 4, torch.float32, torch.device("cpu"))
    monkeypatch.setattr(kv_cache, "available_bytes", lambda dev: None)   # unknown: not refused
    kv_cache.check_pool_fits(cfg, 1 << 24, 4, torch.float32, torch.device("cpu"))


def test_available_memory_is_read_on_this_host():
    free = kv_cache.available_bytes(torch.device("cpu"))
    assert free is not None and free > 0


def _simulate(tiny_model_dir, tmp_path, *lines, extra=()):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = tmp_path / "s.json"
    code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu", "--block-size", "8",
                 "--num-blocks", "64", "--workload", "replay", str(path),
                 "--summary-json", str(summary), *extra])
    return code, path


FINE = {"arrival_s": 0, "prompt": "The list type", "max_tokens": 2}


@pytest.mark.parametrize("line, message", [
    ({"arrival_s": 0, "prompt": "The list type", "max_tokens": 2, "n": 65},
     "n: must be an integer from 1 to 64, got 65"),
    ({"arrival_s": 0, "prompt_token_ids": [4096], "max_tokens": 2},
     "prompt_token_ids: token id 4096 is outside the model's vocabulary of"),
    ({"arrival_s": 0, "prompt_len": 100_000_000, "max_tokens": 2},
     "prompt_len: must be an integer from 1 to 1048576"),
    ({"arrival_s": 0, "prompt_len": 600, "max_tokens": 2},
     "prompt_len: 600 tokens do not fit the model's context of 512"),
    ({"arrival_s": 1e305, "prompt": "The list type", "max_tokens": 2},
     "arrival_s: must be a number of seconds from 0 to 1e+09"),
])
def test_simulate_refuses_replay_lines_the_model_cannot_take(tiny_model_dir, tmp_path, capsys, line, message):
    code, path = _simulate(tiny_model_dir, tmp_path, FINE, line)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"tinyserve simulate: error: {path}:2: {message}"), err[0]
    assert not (tmp_path / "s.json").exists()


def test_simulate_refuses_a_generated_workload_longer_than_the_context(tiny_model_dir, capsys):
    code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu", "--requests", "2",
                 "--prompt-len", "100", "--prompt-len-max", "1000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "prompt_len_max: prompts of up to 1000 tokens do not fit the model's context of 512" in err[0]


def test_simulate_refuses_max_model_len_above_the_context(tiny_model_dir, capsys):
    code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu", "--max-model-len", "1024"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "1024 is above the model's context of 512" in err[0]
