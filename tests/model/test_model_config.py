"""ModelConfig reads every HF spelling of the fields and rejects bad ones by name."""

from __future__ import annotations

import pytest
import transformers

from tinyserve_core.errors import ModelLoadError
from tinyserve_core.model import ModelConfig

BASE = dict(model_type="llama", vocab_size=100, hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4)


def test_defaults_follow_hf():
    c = ModelConfig.from_dict(BASE)
    assert c.num_key_value_heads == 4 and c.head_dim == 16 and c.rope_theta == 10000.0
    assert c.attention_bias is False and c.tie_word_embeddings is False and c.rope_scaling is None
    q = ModelConfig.from_dict({**BASE, "model_type": "qwen2"})
    assert q.attention_bias is True  # Qwen2's q/k/v always carry biases


@pytest.mark.parametrize("rope", [
    {"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}},               # transformers 4.x, old key
    {"rope_theta": 5e5, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},          # transformers 4.x
    {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}},      # transformers 5.x
])
def test_rope_spellings_agree(rope):
    c = ModelConfig.from_dict({**BASE, **rope})
    assert c.rope_theta == 5e5 and c.rope_scaling == {"rope_type": "linear", "factor": 2.0}


def test_llama3_original_context_defaults_to_max_positions():
    c = ModelConfig.from_dict({**BASE, "max_position_embeddings": 512, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}})
    assert c.rope_scaling["original_max_position_embeddings"] == 512


def test_to_dict_is_read_by_transformers_identically():
    c = ModelConfig.from_dict({**BASE, "num_key_value_heads": 2, "head_dim": 32, "rope_theta": 5e5,
                               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                               "tie_word_embeddings": True})
    hc = transformers.LlamaConfig.from_dict(c.to_dict())
    assert hc.head_dim == 32 and hc.num_key_value_heads == 2 and hc.tie_word_embeddings
    assert hc.rope_parameters["rope_type"] == "llama3" and hc.rope_parameters["rope_theta"] == 5e5
    assert ModelConfig.from_dict(hc.to_dict()) == c


@pytest.mark.parametrize("change, field", [
    ({"model_type": "bert"}, "model_type"),
    ({"model_type": ...}, "model_type"),
    ({"vocab_size": ...}, "vocab_size"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"head_dim": 15}, "head_dim"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type"),
    ({"rope_scaling": {"rope_type": "linear"}}, "rope_scaling.factor"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                       "high_freq_factor": 1.0}}, "high_freq_factor"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"model_type": "mistral", "sliding_window": 16, "max_position_embeddings": 64}, "sliding_window"),
])
def test_bad_fields_named(change, field):
    d = {**BASE, **change}
    d = {k: v for k, v in d.items() if v is not ...}
    with pytest.raises(ModelLoadError) as e:
        ModelConfig.from_dict(d, "some/config.json")
    assert e.value.path == "some/config.json" and field in e.value.message
