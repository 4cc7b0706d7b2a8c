"""Shared fixtures: a tiny random Llama checkpoint folder with a real byte-level BPE
tokenizer, built once per session (no downloads), for engine/CLI/GUI tests."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
import torch

@pytest.fixture(autouse=True)
def _gui_cycles_collected_on_the_main_thread(request):
    """GUI tests run with automatic cycle collection off and collect once after, on the main
    thread, as the app does (pyqtgraph's GarbageCollector in app/main.py): a collection that
    a worker thread triggers can destroy a widget off the GUI thread (test_scene_gui hung so:
    the scene worker, importing sentence-transformers, collected a leftover QMenu)."""
    if request.node.path.parent.name not in ("app", "attach"):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.enable()


# Single-threaded torch: on a loaded 2-core machine two threads made small ops up to
# 100x slower (spinning OpenMP workers), and tests use small tensors anyway.
torch.set_num_threads(1)

_TEXT = (
    "The list type is a mutable sequence. Lists may be constructed in several ways: "
    "using a pair of square brackets, using a list comprehension, or using the type "
    "constructor. The dictionary maps hashable values to arbitrary objects. "
    "Tuples are immutable sequences, typically used to store collections of "
    "heterogeneous data. Ranges represent an immutable sequence of numbers. "
) * 20


def make_tokenizer_json(path: Path, vocab_size: int = 320) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([_TEXT], trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
        "bos_token": "<|endoftext|>", "unk_token": None, "model_max_length": 512}))


def make_tiny_model_dir(path: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                        kv_heads: int = 2, max_pos: int = 512, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from tinyserve_core.model.config import ModelConfig
    from tinyserve_core.model.llama import LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer_json(path)
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    eos = vocab["<|endoftext|>"]
    cfg = ModelConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, max_position_embeddings=max_pos,
                      tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos,
                      rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than HF init so greedy outputs vary by prompt
        for p in model.parameters():
            p.mul_(4.0)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg_dict = cfg.to_dict()
    cfg_dict.setdefault("architectures", ["LlamaForCausalLM"])
    cfg_dict["torch_dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "bos_token_id": eos}))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
