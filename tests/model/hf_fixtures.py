"""Tiny random HF checkpoints (built here, never downloaded) for the golden tests."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB = 300
TEXT = ["The quick brown fox jumps over the lazy dog. " * 4,
        "Paged attention keeps keys and values in fixed-size blocks.",
        "Prefix caching reuses the blocks of a shared system prompt."]


def byte_level_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return tok


def hf_config(kind: str):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1,
                  max_position_embeddings=256)
    if kind == "llama3":
        return transformers.LlamaConfig(**common, rope_theta=500.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32})
    if kind == "linear":
        return transformers.LlamaConfig(**common, rope_theta=10000.0, attention_bias=True,
                                        rope_scaling={"rope_type": "linear", "factor": 2.0})
    if kind == "qwen2":
        return transformers.Qwen2Config(**common, rope_theta=10000.0, tie_word_embeddings=True)
    raise ValueError(kind)


def make_hf_folder(path, kind: str, seed: int = 0):
    """Save a random-init HF model of `kind` with a tokenizer to `path`; returns the HF model."""
    torch.manual_seed(seed)
    cfg = hf_config(kind)
    cls = transformers.Qwen2ForCausalLM if kind == "qwen2" else transformers.LlamaForCausalLM
    model = cls(cfg).eval()
    with torch.no_grad():
        # Wider than HF's 0.02 init so logits are far from ties and errors show.
        for name, p in model.named_parameters():
            # Large q/k make attention peaked, so a wrong position or mask shows.
            p.normal_(0.0, 0.5 if name.endswith(("q_proj.weight", "k_proj.weight")) else 0.15)
    model.save_pretrained(path, safe_serialization=True)
    byte_level_tokenizer().save(str(path / "tokenizer.json"))
    return model
