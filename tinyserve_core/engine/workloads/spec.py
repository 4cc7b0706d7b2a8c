"""The workload a person asks for (WorkloadSpec, validated where it enters), the
request it yields (WorkloadRequest) and length distributions."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..config.sections import MAX_SAMPLES, MAX_TOKENS

WORKLOAD_KINDS = ("poisson", "static", "passkey", "replay")
LENGTH_DISTS = ("fixed", "uniform", "lognormal")
# Arrival times in seconds: about 31 years. Beyond this, microsecond trace times lose
# all precision (1e305 s became `ts: Infinity`) and durations read as zero.
MAX_ARRIVAL_S = 1e9


@dataclass(slots=True)
class WorkloadRequest:
    arrival_s: float
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_len: int
    max_tokens: int
    n: int = 1
    salt: str | None = None
    group: int | None = None          # shared-prefix group, None = no shared prefix
    passkey: str | None = None        # the expected answer of a passkey prompt


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What the model that will run a workload accepts, known once its config is read:
    prompts of at most `context - 1` tokens (the engine keeps one position for output)
    made of ids below `vocab_size` (a larger id would index past the embedding)."""
    context: int
    vocab_size: int

    @property
    def max_prompt_len(self) -> int:
        return self.context - 1

    def length_problem(self, num_tokens: int) -> str | None:
        if num_tokens > self.max_prompt_len:
            return (f"{num_tokens} tokens do not fit the model's context of {self.context} "
                    f"(max_model_len; at most {self.max_prompt_len} prompt tokens)")
        return None

    def vocab_problem(self, ids: list[int]) -> str | None:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            return (f"token id {bad} is outside the model's vocabulary of {self.vocab_size} ids "
                    f"(0 to {self.vocab_size - 1})")
        return None


# -- lengths -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LengthDist:
    """`value` is the fixed length, the uniform lower bound or the lognormal median;
    `high` is the uniform upper bound and the lognormal clip; `sigma` is the
    lognormal shape (std of log length)."""
    dist: str
    value: int
    high: int
    sigma: float = 0.6

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.dist == "fixed":
            return np.full(size, self.value, dtype=np.int64)
        if self.dist == "uniform":
            return rng.integers(self.value, self.high, size=size, endpoint=True)
        raw = rng.lognormal(math.log(self.value), self.sigma, size=size)
        return np.clip(np.rint(raw), 1, self.high).astype(np.int64)


# -- the spec the GUI and CLI fill in ------------------------------------------------

@dataclass
class WorkloadSpec:
    """Workload settings. Names match EngineConfig's flat keys and the CLI flags, so a
    config object (or its dict) converts with `from_config`."""
    workload: str = "poisson"
    replay_file: str | None = None
    text_dir: str | None = None          # None = the shipped corpus (assets/text)
    rate: float = 4.0                    # requests per second
    duration: float | None = None        # seconds of arrivals
    requests: int | None = 64
    prompt_len: int = 256
    prompt_len_max: int = 1024
    prompt_dist: str = "lognormal"
    prompt_sigma: float = 0.6
    output_len: int = 64
    output_len_max: int = 256
    output_dist: str = "lognormal"
    output_sigma: float = 0.6
    n: int = 1
    shared_prefix_frac: float = 0.0
    shared_prefix_len: int = 128
    num_prefix_groups: int = 4
    passkey_depth: float | None = None   # 0 = start of the filler, 1 = end; None = random
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkloadSpec":
        if not isinstance(d, Mapping):
            raise ConfigError("workload", "settings must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key.replace("-", "_") not in names:
                raise ConfigError(key, f"unknown workload setting (known: {', '.join(sorted(names))})")
        return cls(**{k.replace("-", "_"): v for k, v in d.items()})

    @classmethod
    def from_config(cls, cfg: Any) -> "WorkloadSpec":
        """Take the workload keys of a dict of flat settings or of an object that writes
        one with `to_dict()` (an EngineConfig, another WorkloadSpec)."""
        flat = cfg if isinstance(cfg, Mapping) else cfg.to_dict()
        return cls(**{f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def prompt_lengths(self) -> LengthDist:
        return LengthDist(self.prompt_dist, self.prompt_len, self.prompt_len_max, self.prompt_sigma)

    @property
    def output_lengths(self) -> LengthDist:
        return LengthDist(self.output_dist, self.output_len, self.output_len_max, self.output_sigma)

    def validate(self) -> None:
        _choice("workload", self.workload, WORKLOAD_KINDS)
        if self.workload == "replay":
            if not isinstance(self.replay_file, (str, Path)) or not str(self.replay_file):
                raise ConfigError("replay_file", "the replay workload needs a JSONL file")
        if self.text_dir is not None and not isinstance(self.text_dir, (str, Path)):
            raise ConfigError("text_dir", f"must be a folder path, got {self.text_dir!r}")
        _number("rate", self.rate, 1e-9, 1e9, low_open=True)
        if self.duration is not None:
            _number("duration", self.duration, 0.0, 1e9, low_open=True)
        if self.requests is not None:
            _integer("requests", self.requests, 1, 10_000_000)
        if self.workload in ("poisson", "passkey") and self.duration is None and self.requests is None:
            raise ConfigError("requests", "give a number of requests or a duration")
        if self.workload == "static" and self.requests is None:
            raise ConfigError("requests", "the static workload needs a number of requests")
        for side in ("prompt", "output"):
            _choice(f"{side}_dist", getattr(self, f"{side}_dist"), LENGTH_DISTS)
            lo = _integer(f"{side}_len", getattr(self, f"{side}_len"), 1, MAX_TOKENS)
            _integer(f"{side}_len_max", getattr(self, f"{side}_len_max"), lo, MAX_TOKENS)
            _number(f"{side}_sigma", getattr(self, f"{side}_sigma"), 0.0, 5.0)
        _integer("n", self.n, 1, MAX_SAMPLES)
        _number("shared_prefix_frac", self.shared_prefix_frac, 0.0, 1.0)
        _integer("shared_prefix_len", self.shared_prefix_len, 1, MAX_TOKENS)
        _integer("num_prefix_groups", self.num_prefix_groups, 1, 1 << 16)
        if self.passkey_depth is not None:
            _number("passkey_depth", self.passkey_depth, 0.0, 1.0)
        _integer("seed", self.seed, 0, 2**63 - 1)


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(field, f"must be one of {', '.join(allowed)}, got {value!r}")


def _integer(field: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(field, f"must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)


def _number(field: str, value: Any, lo: float, hi: float, low_open: bool = False) -> float:
    ok = (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
          and math.isfinite(value) and (lo < value if low_open else lo <= value) and value <= hi)
    if not ok:
        bound = f"> {lo:g} and <= {hi:g}" if low_open else f"from {lo:g} to {hi:g}"
        raise ConfigError(field, f"must be a number {bound}, got {value!r}")
    return float(value)
