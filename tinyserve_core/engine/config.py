"""EngineConfig: one flat set of settings shared by `tinyserve simulate` (flags and
`--config` JSON files) and the GUI (fields, File > Save/Open config).

Field names are the JSON keys and, with dashes, the CLI flags. Validation happens here,
where people's input enters, and raises ConfigError naming the field."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..selection.registry import policy_names

POLICIES = policy_names()
WORKLOADS = ("poisson", "static", "replay", "passkey")
LENGTH_DISTS = ("fixed", "uniform", "lognormal")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
TIER_POLICIES = ("lru", "lfu")

# One line per setting for `tinyserve simulate --help` and GUI tooltips.
HELP = {
    "model": "Hugging Face checkpoint folder (default: the shipped tinyserve-lm)",
    "device": "auto | cpu | cuda", "dtype": "auto | float32 | float16 | bfloat16",
    "block_size": "tokens per KV block (power of two, 1..128)",
    "num_blocks": "physical KV blocks in the pool",
    "max_model_len": "context limit in tokens (default: the model's)",
    "enable_prefix_caching": "reuse cached full blocks of shared prefixes (true/false)",
    "max_num_seqs": "most sequences running at once",
    "max_num_batched_tokens": "prompt-token budget of one prefill step",
    "seed": "seed of the workload and of sampling",
    "temperature": "sampling temperature (0 = greedy)", "top_p": "nucleus sampling mass",
    "top_k": "top-k sampling (0 = off)", "n": "parallel samples per request (fork + copy-on-write)",
    "workload": "poisson | static | passkey | replay FILE",
    "replay_file": "JSONL workload to replay", "text_dir": "folder of .txt files for prompts",
    "rate": "arrivals per second (engine clock)", "duration": "seconds of arrivals",
    "requests": "number of requests", "prompt_len": "typical prompt length (tokens)",
    "prompt_len_max": "longest prompt (tokens)", "prompt_dist": "fixed | uniform | lognormal",
    "prompt_sigma": "lognormal spread of prompt lengths",
    "output_len": "typical output length (tokens)", "output_len_max": "longest output (tokens)",
    "output_dist": "fixed | uniform | lognormal", "output_sigma": "lognormal spread of output lengths",
    "passkey_depth": "passkey workload: key depth 0..1 (default random)",
    "shared_prefix_frac": "share of requests starting with a shared system prompt (0..1)",
    "shared_prefix_len": "shared system-prompt length (tokens)",
    "num_prefix_groups": "number of distinct shared system prompts",
    "policy": "page selection: " + " | ".join(POLICIES),
    "budget": "selection budget: tokens if > 1, else a fraction of the context",
    "top_p_mass": "adaptive policy: estimated attention mass to keep",
    "sink_pages": "pages at the start always kept", "dense_layers": "first layers kept dense",
    "recent_pages": "streaming/h2o: recent window in pages (0 = half the budget)",
    "tier_pages": "fast-tier pages per sequence (0 = no tiering)", "tier_policy": "lru | lfu",
    "stats": "selection statistics on (recall, oracle pages, violations)",
    "profile": "time each op family per step (the Kernels view, op_ms in traces); CUDA-graph "
               "steps are timed whole, with an eager per-op breakdown every 16th",
    "trace": "write a Chrome/Perfetto trace JSON here", "metrics": "write per-step metrics CSV here",
    "summary_json": "write the run summary JSON here",
}

# Changing one of these needs a new KV pool or model: the engine is rebuilt.
RESTART_KEYS = frozenset({"model", "device", "dtype", "block_size", "num_blocks",
                          "enable_prefix_caching", "max_model_len"})
# Output paths and workload shape are read when a run starts, not by the engine.
RUN_KEYS = frozenset({"trace", "metrics", "summary_json", "workload", "replay_file",
                      "duration", "requests", "text_dir"})


@dataclass
class EngineConfig:
    # model and memory
    model: str | None = None            # HF checkpoint folder; None = the shipped model
    device: str = "auto"
    dtype: str = "auto"
    block_size: int = 16
    num_blocks: int = 2048
    max_model_len: int | None = None    # None = the model's max_position_embeddings
    enable_prefix_caching: bool = True
    # scheduler
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 4096
    seed: int = 0
    # sampling applied to workload requests
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    n: int = 1
    # workload
    workload: str = "poisson"
    replay_file: str | None = None
    text_dir: str | None = None
    rate: float = 4.0                   # requests per second (engine clock)
    duration: float | None = None       # seconds of arrivals; or:
    requests: int | None = 64           # number of requests
    prompt_len: int = 256
    prompt_len_max: int = 1024
    prompt_dist: str = "lognormal"
    prompt_sigma: float = 0.6           # lognormal spread of prompt lengths
    output_len: int = 64
    output_len_max: int = 256
    output_dist: str = "lognormal"
    output_sigma: float = 0.6
    passkey_depth: float | None = None  # passkey workload: 0 = start, 1 = end, None = random
    shared_prefix_frac: float = 0.0     # share of requests that start with a shared prefix
    shared_prefix_len: int = 128
    num_prefix_groups: int = 4
    # query-aware selection
    policy: str = "dense"
    budget: float = 256                 # tokens if > 1, else a fraction of the context
    top_p_mass: float = 0.99            # adaptive policy: estimated attention mass to keep
                                        # (0.9 kept only 0.83 of the true mass on the shipped model)
    sink_pages: int = 1
    dense_layers: int = 2
    recent_pages: int = 0               # streaming / h2o: recent window in pages; 0 = half the budget
    tier_pages: int = 0                 # fast-tier pages per sequence; 0 = no tiering
    tier_policy: str = "lru"
    stats: bool = False
    profile: bool = False               # per-op timings in every StepRecord (the GUI turns it on)
    # outputs (CLI)
    trace: str | None = None
    metrics: str | None = None
    summary_json: str | None = None

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], base: "EngineConfig | None" = None) -> "EngineConfig":
        if not isinstance(d, dict):
            raise ConfigError("config", "must be a JSON object of settings")
        known = {f.name: f for f in dataclasses.fields(cls)}
        cfg = dataclasses.replace(base) if base is not None else cls()
        for key, value in d.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(key, f"unknown setting (known: {', '.join(sorted(known))})")
            setattr(cfg, name, _coerce(name, value, known[name]))
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "EngineConfig":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError("config", f"cannot read {p}: {e.strerror or e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes) -> "EngineConfig":
        return EngineConfig.from_dict(changes, base=self)

    # -- validation ---------------------------------------------------------------
    def validate(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        bs = self.block_size
        if not (1 <= bs <= 128 and bs & (bs - 1) == 0):
            raise ConfigError("block_size", f"must be a power of two from 1 to 128, got {bs}")
        _int_range("num_blocks", self.num_blocks, 1, 1 << 24)
        if self.max_model_len is not None:
            _int_range("max_model_len", self.max_model_len, 2, 1 << 20)
        _int_range("max_num_seqs", self.max_num_seqs, 1, 4096)
        _int_range("max_num_batched_tokens", self.max_num_batched_tokens, 1, 1 << 20)
        _int_range("seed", self.seed, 0, 2**63 - 1)
        _float_range("temperature", self.temperature, 0.0, 10.0)
        _float_range("top_p", self.top_p, 1e-6, 1.0)
        _int_range("top_k", self.top_k, 0, 1 << 20)
        _int_range("n", self.n, 1, 64)
        _choice("workload", self.workload, WORKLOADS)
        if self.workload == "replay" and not self.replay_file:
            raise ConfigError("replay_file", "the replay workload needs a JSONL file")
        _float_range("rate", self.rate, 1e-6, 1e6)
        if self.duration is not None:
            _float_range("duration", self.duration, 1e-6, 1e7)
        if self.requests is not None:
            _int_range("requests", self.requests, 1, 10_000_000)
        if self.duration is None and self.requests is None and self.workload != "replay":
            raise ConfigError("requests", "give a number of requests or a duration")
        _int_range("prompt_len", self.prompt_len, 1, 1 << 20)
        _int_range("prompt_len_max", self.prompt_len_max, self.prompt_len, 1 << 20)
        _choice("prompt_dist", self.prompt_dist, LENGTH_DISTS)
        _int_range("output_len", self.output_len, 1, 1 << 20)
        _int_range("output_len_max", self.output_len_max, self.output_len, 1 << 20)
        _choice("output_dist", self.output_dist, LENGTH_DISTS)
        _float_range("prompt_sigma", self.prompt_sigma, 0.0, 5.0)
        _float_range("output_sigma", self.output_sigma, 0.0, 5.0)
        if self.passkey_depth is not None:
            _float_range("passkey_depth", self.passkey_depth, 0.0, 1.0)
        _float_range("shared_prefix_frac", self.shared_prefix_frac, 0.0, 1.0)
        _int_range("shared_prefix_len", self.shared_prefix_len, 1, 1 << 20)
        _int_range("num_prefix_groups", self.num_prefix_groups, 1, 1 << 16)
        _choice("policy", self.policy, POLICIES)
        if not isinstance(self.budget, (int, float)) or not math.isfinite(self.budget) or self.budget <= 0:
            raise ConfigError("budget", f"must be > 0 (tokens if > 1, a fraction of the context if <= 1), got {self.budget!r}")
        _float_range("top_p_mass", self.top_p_mass, 1e-6, 1.0)
        _int_range("sink_pages", self.sink_pages, 0, 1 << 16)
        _int_range("dense_layers", self.dense_layers, 0, 1 << 10)
        _int_range("recent_pages", self.recent_pages, 0, 1 << 16)
        _int_range("tier_pages", self.tier_pages, 0, 1 << 24)
        _choice("tier_policy", self.tier_policy, TIER_POLICIES)
        if not isinstance(self.profile, bool):
            raise ConfigError("profile", f"must be true or false, got {self.profile!r}")

    def live_changes(self, other: "EngineConfig") -> tuple[dict[str, Any], set[str]]:
        """Split the differences to `other` into live-appliable ones and restart keys."""
        live, restart = {}, set()
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                if f.name in RESTART_KEYS:
                    restart.add(f.name)
                else:
                    live[f.name] = b
        return live, restart


def _coerce(name: str, value: Any, f: dataclasses.Field) -> Any:
    """JSON/CLI values to the field's type, with a message naming the field."""
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in typ
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must not be null")
    base = typ.replace(" | None", "").replace("None | ", "")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {base}, got {value!r}") from None
    return value


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")


def _int_range(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(name, f"must be an integer from {lo} to {hi}, got {value!r}")


def _float_range(name, value, lo, hi):
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or not lo <= value <= hi):
        raise ConfigError(name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
