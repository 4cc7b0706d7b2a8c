"""ModelConfig: the Hugging Face `config.json` of a Llama-family decoder.

Field names are HF's so a config round-trips through `config.json` unchanged. RoPE
parameters are accepted in both HF layouts (transformers 4.x `rope_theta` +
`rope_scaling`, transformers 5.x `rope_parameters`) and normalised to the 4.x pair,
which every transformers version reads."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..loaders import MiB, load_json

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
# Qwen2 always has q/k/v biases (its HF config has no switch); Llama/Mistral default off.
_DEFAULT_ATTENTION_BIAS = {"llama": False, "qwen2": True, "mistral": False}
_DEFAULT_MAX_POS = {"llama": 2048, "qwen2": 32768, "mistral": 32768}
# HF config.json files are a few KB (id2label tables make a few hundred).
MAX_CONFIG_BYTES = 4 * MiB
# Upper bounds well past every released Llama-family model (largest vocabularies ~260k,
# hidden sizes 16k, 128 layers, 10M-token contexts); beyond them a config is a typo or
# hostile, and its tensors could not be allocated anyway.
_SIZE_LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
                "num_hidden_layers": 1024, "num_attention_heads": 1024, "num_key_value_heads": 1024,
                "head_dim": 2048, "max_position_embeddings": 1 << 25}


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
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            _bad("model_type", f"{_short(self.model_type)} is not supported (one of {', '.join(SUPPORTED_MODEL_TYPES)})")
        for name, limit in _SIZE_LIMITS.items():
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                _bad(name, f"must be a positive integer, got {_short(v)}")
            if v > limit:
                _bad(name, f"{v} is over the limit of {limit} (no Llama-family model is that large)")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            _bad("num_key_value_heads", f"{self.num_key_value_heads} does not divide "
                 f"num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2 != 0:
            _bad("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        _positive_number("rms_norm_eps", self.rms_norm_eps)
        _positive_number("rope_theta", self.rope_theta)
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ("silu", "swish"):
            _bad("hidden_act", f"{_short(self.hidden_act)} is not supported (SwiGLU needs 'silu')")
        for name in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                _bad(name, f"must be true or false, got {_short(getattr(self, name))}")
        for name in ("bos_token_id", "eos_token_id"):
            _token_ids(name, getattr(self, name), self.vocab_size)
        # HF configs use -1 (or ids past the vocabulary) for "no padding"; only the type matters
        if self.pad_token_id is not None and not _is_int(self.pad_token_id):
            _bad("pad_token_id", f"must be an integer or null, got {_short(self.pad_token_id)}")
        if self.torch_dtype is not None and not isinstance(self.torch_dtype, str):
            _bad("torch_dtype", f"must be a string or null, got {_short(self.torch_dtype)}")
        rs = self.rope_scaling
        if rs is not None:
            rt = rs["rope_type"]
            if not isinstance(rt, str) or rt not in SUPPORTED_ROPE_TYPES:
                _bad("rope_scaling.rope_type", f"{_short(rt)} is not supported (one of {', '.join(SUPPORTED_ROPE_TYPES)})")
            need = {"linear": ("factor",),
                    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                               "original_max_position_embeddings")}.get(rt, ())
            for k in need:
                _positive_number(f"rope_scaling.{k}", rs.get(k), f" for rope_type {rt!r}")
            if rt == "llama3" and rs["high_freq_factor"] <= rs["low_freq_factor"]:
                _bad("rope_scaling.high_freq_factor", "must be greater than low_freq_factor")

    # ---- (de)serialisation ------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path = "config.json") -> "ModelConfig":
        """Build from a parsed config.json; errors name `source` and the field."""
        if not isinstance(d, dict):
            raise ModelLoadError(str(source), "expected a JSON object")
        mt = d.get("model_type")
        if mt is None:
            raise ModelLoadError(str(source), "missing", field="model_type")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(str(source), f"{_short(mt)} is not supported "
                                 f"(one of {', '.join(SUPPORTED_MODEL_TYPES)})", field="model_type")
        for k in _REQUIRED:
            if k not in d or d[k] is None:
                raise ModelLoadError(str(source), "missing", field=k)
        if mt == "mistral":
            sw, mp = d.get("sliding_window"), d.get("max_position_embeddings")
            if sw is not None and not _is_int(sw):
                raise ModelLoadError(str(source), f"must be an integer or null, got {_short(sw)}",
                                     field="sliding_window")
            if sw is not None and _is_int(mp) and sw < mp:
                raise ModelLoadError(str(source), f"{sw} < max_position_embeddings {mp}; "
                                     "sliding-window attention is not supported", field="sliding_window")
        if mt == "qwen2" and d.get("use_sliding_window"):
            raise ModelLoadError(str(source), "sliding-window attention is not supported", field="use_sliding_window")
        rope_theta, rope_scaling = _rope_from_hf(d, source)
        prf = d.get("partial_rotary_factor", 1.0)
        if isinstance(rope_scaling, dict):
            rope_scaling = dict(rope_scaling)
            prf = rope_scaling.pop("partial_rotary_factor", prf)
        if isinstance(prf, bool) or prf not in (None, 1, 1.0):
            raise ModelLoadError(str(source), f"{_short(prf)} is not supported (only 1.0)", field="partial_rotary_factor")
        kwargs = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("rope_theta", "rope_scaling")}
        kwargs["rope_theta"] = rope_theta
        kwargs["rope_scaling"] = rope_scaling
        if "torch_dtype" not in d and "dtype" in d:
            kwargs["torch_dtype"] = d["dtype"]
        try:
            return cls(**kwargs)
        except ModelLoadError as e:   # raised naming "config"; name the file read
            raise ModelLoadError(str(source), e.message.removeprefix(f"{e.field}: "), field=e.field) from None

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelConfig":
        f = Path(path) / "config.json"
        if not f.exists():
            raise ModelLoadError(str(f), "missing: a model folder needs a config.json")
        return cls.from_dict(load_json(f, max_bytes=MAX_CONFIG_BYTES, field="config"), f)

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
        _bad("rope_scaling", f"expected an object or null, got {_short(rs)}")
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
        if not isinstance(rp, dict):
            raise ModelLoadError(str(source), f"expected an object, got {_short(rp)}", field="rope_parameters")
        if any(isinstance(v, dict) for v in rp.values()):
            raise ModelLoadError(str(source), "per-layer-type RoPE is not supported", field="rope_parameters")
        theta = rp.get("rope_theta", theta)
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    elif isinstance(scaling, dict) and "rope_theta" in scaling and theta is None:
        theta = scaling["rope_theta"]
    if theta is None:
        theta = 10000.0
    return theta, scaling


def _bad(field: str, problem: str):
    # from_dict re-raises this with the path of the file it read
    raise ModelLoadError("config", problem, field=field)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _positive_number(field: str, x: Any, why: str = "") -> None:
    """A finite number > 0; bools are not numbers (JSON true would read as 1)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        _bad(field, f"must be a positive number{why}, got {_short(x)}")
    try:
        ok = math.isfinite(x) and x > 0
    except OverflowError:           # an int past the float range
        ok = False
    if not ok:
        _bad(field, f"must be a finite positive number{why}, got {_short(x)}")


def _token_ids(field: str, v: Any, vocab_size: int) -> None:
    """null, an id or (as HF allows for eos) a list of ids, each inside the vocabulary."""
    ids = v if isinstance(v, list) else [] if v is None else [v]
    for t in ids:
        if not _is_int(t):
            _bad(field, f"must be a token id (integer) or a list of them, got {_short(v)}")
        if not 0 <= t < vocab_size:
            _bad(field, f"token id {t} is outside the vocabulary (0..{vocab_size - 1})")
