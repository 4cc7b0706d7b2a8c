"""Training checkpoints are a safetensors + JSON pair: a round trip
restores model, optimizer, data stream and RNG exactly; a pair that does not belong
together, a damaged state or a run of another shape is refused with the path."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError, InputFileError
from tinyserve_core.model.config import ModelConfig
from tinyserve_core.model.llama import LlamaForCausalLM
from tinyserve_core.model.train.checkpoint import check_matches, load_checkpoint, restore, save_checkpoint
from tinyserve_core.model.train.train_lm import make_optimizer


class _Sampler:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


def _setup(seed):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
                      max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    return model, make_optimizer(model, 1e-2, 0.1, fused=False), _Sampler(seed)


def _train_step(model, opt, sampler):
    batch = torch.from_numpy(sampler.rng.integers(0, 64, (2, 9)))
    logits = model.forward_dense(batch[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    loss = loss + 1e-3 * torch.randn(()).abs()    # the torch RNG is part of the state
    loss.backward()
    opt.step()
    opt.zero_grad()


ARGS = argparse.Namespace(size="tiny", context=128, batch=4, vocab_size=512, out="x")


def test_round_trip_continues_identically(tmp_path):
    model, opt, sampler = _setup(0)
    for _ in range(3):
        _train_step(model, opt, sampler)
    save_checkpoint(tmp_path / "ck", model, opt, sampler, 3, 1.5, [{"step": 3}], ARGS)
    for _ in range(2):
        _train_step(model, opt, sampler)

    model2, opt2, sampler2 = _setup(1)            # different init, data and RNG
    ck = load_checkpoint(tmp_path / "ck" / "checkpoint.json")
    assert ck.step == 3 and ck.state["history"] == [{"step": 3}]
    check_matches(ck, ARGS)
    restore(ck, model2, opt2, sampler2)
    for _ in range(2):
        _train_step(model2, opt2, sampler2)
    a, b = model.state_dict(), model2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_mismatched_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    model, opt, sampler = _setup(0)
    _train_step(model, opt, sampler)
    folder = tmp_path / "ck"
    save_checkpoint(folder, model, opt, sampler, 1, 0.1, [], ARGS)
    state = json.loads((folder / "checkpoint.json").read_text())

    with pytest.raises(ConfigError, match="--size tiny"):
        check_matches(load_checkpoint(folder), argparse.Namespace(**{**vars(ARGS), "size": "small"}))

    (folder / "checkpoint.json").write_text(json.dumps({**state, "step": 7}))   # halves of two saves
    with pytest.raises(InputFileError, match="not one checkpoint") as e:
        load_checkpoint(folder)
    assert str(e.value).startswith(str(folder))

    (folder / "checkpoint.json").write_text(json.dumps({**state, "torch_rng": [1, 2, 999]}))
    with pytest.raises(InputFileError, match="torch_rng") as e:
        load_checkpoint(folder)
    assert str(e.value).startswith(str(folder / "checkpoint.json"))

    (folder / "checkpoint.json").write_text(json.dumps(state))
    other, other_opt, other_sampler = _setup(0)
    other.model.layers.append(other.model.layers[0])   # another shape of model
    with pytest.raises(InputFileError, match="does not fit this run"):
        restore(load_checkpoint(folder), other, other_opt, other_sampler)

    (folder / "checkpoint.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"not json")
    with pytest.raises(InputFileError, match="safetensors"):
        load_checkpoint(folder)
