"""ModelConfig: the Hugging Face `config.json` of a Llama-family decoder.

Field names are HF's so a config round-trips through `config.json` unchanged. RoPE
parameters are accepted in both HF layouts (transformers 4.x `rope_theta` +
`rope_scaling`, transformers 5.x `rope_parameters`) and normalised to the 4.x pair,
which every transformers version reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
# Qwen2 always has q/k/v biases (its HF config has no switch); Llama/Mistral default off.
_DEFAULT_ATTENTION_BIAS = {"llama": False, "qwen2": True, "mistral": False}
_DEFAULT_MAX_POS = {"llama": 2048, "qwen2": 32768, "mistral": 32768}


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    model_type: str = "llama"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool | None = None
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int | None = None
    hidden_act: str = "silu"
    bos_token_id: int | list[int] | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    torch_dtype: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.attention_bias is None:
            self.attention_bias = _DEFAULT_ATTENTION_BIAS.get(self.model_type, False)
        if self.max_position_embeddings is None:
            self.max_position_embeddings = _DEFAULT_MAX_POS.get(self.model_type, 2048)
        if self.head_dim is None and isinstance(self.hidden_size, int) and isinstance(
                self.num_attention_heads, int) and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.rope_scaling = _normalise_rope_scaling(self.rope_scaling, self.max_position_embeddings)
        self._validate()

    # ---- validation -------------------------------------------------------------------
    def _validate(self) -> None:
        def bad(fieldname: str, msg: str):
            raise ModelLoadError("config", f"{fieldname}: {msg}")

        if self.model_type not in SUPPORTED_MODEL_TYPES:
            bad("model_type", f"{self.model_type!r} is not supported (one of {', '.join(SUPPORTED_MODEL_TYPES)})")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                bad(name, f"must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            bad("num_key_value_heads", f"{self.num_key_value_heads} does not divide "
                f"num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2 != 0:
            bad("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        if not isinstance(self.rms_norm_eps, (int, float)) or not self.rms_norm_eps > 0:
            bad("rms_norm_eps", f"must be a positive number, got {self.rms_norm_eps!r}")
        if not isinstance(self.rope_theta, (int, float)) or not self.rope_theta > 0:
            bad("rope_theta", f"must be a positive number, got {self.rope_theta!r}")
        if self.hidden_act not in ("silu", "swish"):
            bad("hidden_act", f"{self.hidden_act!r} is not supported (SwiGLU needs 'silu')")
        rs = self.rope_scaling
        if rs is not None:
            rt = rs["rope_type"]
            if rt not in SUPPORTED_ROPE_TYPES:
                bad("rope_scaling.rope_type", f"{rt!r} is not supported (one of {', '.join(SUPPORTED_ROPE_TYPES)})")
            need = {"linear": ("factor",),
                    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                               "original_max_position_embeddings")}.get(rt, ())
            for k in need:
                if not isinstance(rs.get(k), (int, float)) or isinstance(rs.get(k), bool) or rs[k] <= 0:
                    bad(f"rope_scaling.{k}", f"must be a positive number for rope_type {rt!r}, got {rs.get(k)!r}")
            if rt == "llama3" and rs["high_freq_factor"] <= rs["low_freq_factor"]:
                bad("rope_scaling.high_freq_factor", "must be greater than low_freq_factor")

    # ---- (de)serialisation ------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path = "config.json") -> "ModelConfig":
        """Build from a parsed config.json; errors name `source` and the field."""
        if not isinstance(d, dict):
            raise ModelLoadError(str(source), "expected a JSON object")
        mt = d.get("model_type")
        if mt is None:
            raise ModelLoadError(str(source), "model_type: missing")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(str(source), f"model_type: {mt!r} is not supported "
                                 f"(one of {', '.join(SUPPORTED_MODEL_TYPES)})")
        for k in _REQUIRED:
            if k not in d or d[k] is None:
                raise ModelLoadError(str(source), f"{k}: missing")
        if mt == "mistral":
            sw, mp = d.get("sliding_window"), d.get("max_position_embeddings")
            if sw is not None and mp is not None and sw < mp:
                raise ModelLoadError(str(source), f"sliding_window: {sw} < max_position_embeddings "
                                     f"{mp}; sliding-window attention is not supported")
        if mt == "qwen2" and d.get("use_sliding_window"):
            raise ModelLoadError(str(source), "use_sliding_window: sliding-window attention is not supported")
        rope_theta, rope_scaling = _rope_from_hf(d, source)
        prf = d.get("partial_rotary_factor", 1.0)
        if isinstance(rope_scaling, dict):
            rope_scaling = dict(rope_scaling)
            prf = rope_scaling.pop("partial_rotary_factor", prf)
        if prf not in (None, 1, 1.0):
            raise ModelLoadError(str(source), f"partial_rotary_factor: {prf} is not supported (only 1.0)")
        kwargs = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("rope_theta", "rope_scaling")}
        kwargs["rope_theta"] = rope_theta
        kwargs["rope_scaling"] = rope_scaling
        if "torch_dtype" not in d and "dtype" in d:
            kwargs["torch_dtype"] = d["dtype"]
        try:
            return cls(**kwargs)
        except ModelLoadError as e:
            raise ModelLoadError(str(source), e.message) from None
        except (TypeError, ValueError) as e:
            raise ModelLoadError(str(source), f"invalid value: {e}") from None

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelConfig":
        f = Path(path) / "config.json"
        if not f.is_file():
            raise ModelLoadError(str(f), "missing: a model folder needs a config.json")
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(str(f), f"not valid JSON: {e}") from None
        return cls.from_dict(d, f)

    def to_dict(self) -> dict[str, Any]:
        """HF config.json content (readable by transformers as LlamaConfig/Qwen2Config)."""
        d = asdict(self)
        d["architectures"] = {"llama": ["LlamaForCausalLM"], "qwen2": ["Qwen2ForCausalLM"],
                              "mistral": ["MistralForCausalLM"]}[self.model_type]
        if d["torch_dtype"] is None:
            del d["torch_dtype"]
        if self.model_type == "qwen2":
            # HF's Qwen2 has fixed q/k/v biases and no attention_bias/mlp_bias switches.
            d.pop("attention_bias")
            d.pop("mlp_bias")
        return d

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads


def _normalise_rope_scaling(rs: dict | None, max_pos: int | None) -> dict | None:
    """One spelling of rope_scaling: `rope_type` key (older configs say `type`), None for
    plain RoPE, llama3's original_max_position_embeddings defaulted as HF does."""
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise ModelLoadError("config", f"rope_scaling: expected an object or null, got {rs!r}")
    rs = dict(rs)
    rs.pop("rope_theta", None)
    rt = rs.pop("type", None)
    rt = rs.get("rope_type", rt) or "default"
    rs["rope_type"] = rt
    if rt == "default":
        return None
    if rt == "llama3":
        rs.setdefault("original_max_position_embeddings", max_pos)
    return rs


def _rope_from_hf(d: dict, source) -> tuple[float, dict | None]:
    rp = d.get("rope_parameters")
    theta = d.get("rope_theta")
    scaling = d.get("rope_scaling")
    if rp is not None:
        if not isinstance(rp, dict) or any(isinstance(v, dict) for v in rp.values()):
            raise ModelLoadError(str(source), "rope_parameters: per-layer-type RoPE is not supported")
        theta = rp.get("rope_theta", theta)
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    elif isinstance(scaling, dict) and "rope_theta" in scaling and theta is None:
        theta = scaling["rope_theta"]
    if theta is None:
        theta = 10000.0
    return theta, scaling
