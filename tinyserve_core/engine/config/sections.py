"""The sections of a run's settings, one dataclass per concern. Each field name is its
flat key (JSON files, `--flag-name`, GUI fields) and each section validates its own
fields with a ConfigError naming that key."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ...errors import ConfigError
from ...selection.registry import policy_names
from .checks import choice, float_range, int_range

POLICIES = policy_names()
WORKLOADS = ("poisson", "static", "replay", "passkey")
LENGTH_DISTS = ("fixed", "uniform", "lognormal")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# vLLM's names: "auto" stores K/V in the model's dtype; "fp8" / "fp8_e4m3" store e4m3 codes
# with one power-of-two scale per (page, kv-head) (kernels/fp8_reference.py)
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3")
TIER_POLICIES = ("lru", "lfu")
# Parallel samples per request: the sampler's limit (SamplingParams), so a workload or
# replay file that asks for more is refused where it is read, not mid-run.
MAX_SAMPLES = 64
# Context lengths (max_model_len, prompt and output lengths) in tokens: far above any
# model this project runs, and low enough that a length never alone exhausts memory.
MAX_TOKENS = 1 << 20
# An eager, per-op-timed decode step of the shipped model is launch bound: a few hundred
# kernel launches and an event pair per op family and layer, ~20 graph replays of the same
# step at batch 64 on an H200. So profiling (the replays' timing and the breakdown samples,
# in host wall time) is paid for from PROFILE_BUDGET of the replayed steps' wall time
# (engine/breakdown_sampler.py), at most one sample per PROFILE_EVERY graph steps;
# the `bench engine` GUI row against the quest + stats row measures the cost.
PROFILE_EVERY = 128
PROFILE_BUDGET = 0.05


@dataclass
class ModelLoadConfig:
    """Which model, on which device, in which dtype, with which context limit.
    (Not `model.config.ModelConfig`, which is the checkpoint's architecture.)"""
    model: str | None = None            # HF checkpoint folder; None = the shipped model
    device: str = "auto"
    dtype: str = "auto"
    max_model_len: int | None = None    # None = the model's max_position_embeddings

    def validate(self) -> None:
        choice("device", self.device, DEVICES)
        choice("dtype", self.dtype, DTYPES)
        if self.max_model_len is not None:
            int_range("max_model_len", self.max_model_len, 2, MAX_TOKENS)


@dataclass
class CacheConfig:
    """The paged KV pool."""
    block_size: int = 16
    num_blocks: int = 2048
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"

    def validate(self) -> None:
        choice("kv_cache_dtype", self.kv_cache_dtype, KV_CACHE_DTYPES)
        bs = self.block_size
        if not (1 <= bs <= 128 and bs & (bs - 1) == 0):
            raise ConfigError("block_size", f"must be a power of two from 1 to 128, got {bs}")
        int_range("num_blocks", self.num_blocks, 1, 1 << 24)


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 4096

    def validate(self) -> None:
        int_range("max_num_seqs", self.max_num_seqs, 1, 4096)
        int_range("max_num_batched_tokens", self.max_num_batched_tokens, 1, 1 << 20)


@dataclass
class SamplingConfig:
    """Sampling applied to the workload's requests."""
    temperature: float = 0.8
    top_p: float = 0.95                 # nucleus sampling (not selection's top_p_mass)
    top_k: int = 0
    n: int = 1                          # parallel samples per request (fork + copy-on-write)

    def validate(self) -> None:
        float_range("temperature", self.temperature, 0.0, 10.0)
        float_range("top_p", self.top_p, 1e-6, 1.0)
        int_range("top_k", self.top_k, 0, 1 << 20)
        int_range("n", self.n, 1, MAX_SAMPLES)


@dataclass
class SelectionConfig:
    """Query-aware page selection; every field can change while the engine runs."""
    policy: str = "dense"
    budget: float = 256                 # tokens if > 1, else a fraction of the context
    top_p_mass: float = 0.99            # adaptive policy: estimated attention mass to keep
                                        # (0.9 kept only 0.83 of the true mass on the shipped model)
    sink_pages: int = 1
    dense_layers: int = 2
    recent_pages: int = 0               # streaming / h2o: recent window in pages; 0 = half the budget
    candidates: float = 4.0             # twostage: stage-1 candidates, a multiple of the budget
    estimate_top_p: float = 0.0         # twostage: 0 keeps the budget, else the fewest pages reaching it
    quant_bits: int = 4                 # twostage: bits of its key copy (8 or 4)
    tier_pages: int = 0                 # fast-tier pages per sequence; 0 = no tiering
    tier_policy: str = "lru"
    stats: bool = False

    def validate(self) -> None:
        choice("policy", self.policy, POLICIES)
        if not isinstance(self.budget, (int, float)) or not math.isfinite(self.budget) or self.budget <= 0:
            raise ConfigError("budget", f"must be > 0 (tokens if > 1, a fraction of the context if <= 1), got {self.budget!r}")
        float_range("top_p_mass", self.top_p_mass, 1e-6, 1.0)
        int_range("sink_pages", self.sink_pages, 0, 1 << 16)
        int_range("dense_layers", self.dense_layers, 0, 1 << 10)
        int_range("recent_pages", self.recent_pages, 0, 1 << 16)
        float_range("candidates", self.candidates, 1.0, 1024.0)
        float_range("estimate_top_p", self.estimate_top_p, 0.0, 1.0)
        int_range("quant_bits", self.quant_bits, 4, 8)
        if self.quant_bits not in (8, 4):
            raise ConfigError("quant_bits", f"must be 8 or 4, got {self.quant_bits}")
        int_range("tier_pages", self.tier_pages, 0, 1 << 24)
        choice("tier_policy", self.tier_policy, TIER_POLICIES)

    def selector_params(self) -> dict:
        """The selector's keyword arguments: the policies take the same names."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class WorkloadConfig:
    """The request stream a run generates (or replays)."""
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

    def validate(self) -> None:
        choice("workload", self.workload, WORKLOADS)
        if self.workload == "replay" and not self.replay_file:
            raise ConfigError("replay_file", "the replay workload needs a JSONL file")
        float_range("rate", self.rate, 1e-6, 1e6)
        if self.duration is not None:
            float_range("duration", self.duration, 1e-6, 1e7)
        if self.requests is not None:
            int_range("requests", self.requests, 1, 10_000_000)
        if self.duration is None and self.requests is None and self.workload != "replay":
            raise ConfigError("requests", "give a number of requests or a duration")
        int_range("prompt_len", self.prompt_len, 1, MAX_TOKENS)
        int_range("prompt_len_max", self.prompt_len_max, self.prompt_len, MAX_TOKENS)
        choice("prompt_dist", self.prompt_dist, LENGTH_DISTS)
        int_range("output_len", self.output_len, 1, MAX_TOKENS)
        int_range("output_len_max", self.output_len_max, self.output_len, MAX_TOKENS)
        choice("output_dist", self.output_dist, LENGTH_DISTS)
        float_range("prompt_sigma", self.prompt_sigma, 0.0, 5.0)
        float_range("output_sigma", self.output_sigma, 0.0, 5.0)
        if self.passkey_depth is not None:
            float_range("passkey_depth", self.passkey_depth, 0.0, 1.0)
        float_range("shared_prefix_frac", self.shared_prefix_frac, 0.0, 1.0)
        int_range("shared_prefix_len", self.shared_prefix_len, 1, MAX_TOKENS)
        int_range("num_prefix_groups", self.num_prefix_groups, 1, 1 << 16)


@dataclass
class OutputConfig:
    """What a run records: per-op timings in its StepRecords (`profile`, the GUI turns it
    on) and the files a command-line run writes when it ends."""
    profile: bool = False
    # Graph-replayed decode steps per eager step that samples the per-op breakdown (at least).
    profile_every: int = PROFILE_EVERY
    # Share of the replayed time the samples may cost (0: a sample every profile_every steps).
    profile_budget: float = PROFILE_BUDGET
    trace: str | None = None
    metrics: str | None = None
    summary_json: str | None = None
    kv_events: str | None = None           # publish vLLM-format KV events here (PUB)
    kv_events_replay: str | None = None    # and answer replays here (ROUTER)

    def validate(self) -> None:
        """Any path is accepted: the files are only opened when the run ends."""
        if not isinstance(self.profile, bool):
            raise ConfigError("profile", f"must be true or false, got {self.profile!r}")
        for key in ("kv_events", "kv_events_replay"):
            url = getattr(self, key)
            if url is not None and not (isinstance(url, str)
                                        and url.startswith(("tcp://", "ipc://", "inproc://"))):
                raise ConfigError(key, f"must be a ZMQ endpoint (tcp://HOST:PORT, ipc://, inproc://), got {url!r}")
        if self.kv_events_replay is not None and self.kv_events is None:
            raise ConfigError("kv_events_replay", "needs kv_events (the endpoint it replays)")
        int_range("profile_every", self.profile_every, 1, 1 << 20)
        float_range("profile_budget", self.profile_budget, 0.0, 1.0)
