"""What `tinyserve eval selection` measures: the sweep's settings (`EvalSpec`), the
tasks built from held-out text (text windows and pass-key samples) and one run's result."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import ConfigError
from ...selection.params import Budget
from ...selection.selector import shared_validator
from ...selection.twostage import TwoStageParams

ALL_POLICIES = ("dense", "quest", "adaptive", "twostage", "streaming", "h2o", "oracle", "oracle_p")
TIER_POLICIES_EVALUATED = ("quest", "adaptive")
TOP_P_POLICIES = ("adaptive", "twostage", "oracle_p")   # run once per --top-p value (twostage also without)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FULL_BUDGETS = ("64", "128", "256", "512", "1/8", "1/4")   # the sweep (--budgets); the target run: 1/8, 1/4
TARGET_BUDGETS = ("1/8", "1/4")


@dataclass
class EvalSpec:
    policies: tuple[str, ...] = ALL_POLICIES
    budgets: tuple[str, ...] = TARGET_BUDGETS
    block_sizes: tuple[int, ...] = (8, 16, 32)
    context: int = 2048                  # tokens per text window
    decode_tokens: int = 64
    text_samples: int = 4
    passkey_samples: int = 200           # per pass-key length
    passkey_lengths: tuple[int, ...] = (1024, 2048)
    top_ps: tuple[float, ...] = (0.95, 0.99)   # TOP_P_POLICIES run once per value (a budget is their cap)
    dense_layers: int = 2
    sink_pages: int | None = None   # None: each policy's default (streaming 1, others 0)
    tier_factors: tuple[float, ...] = (2.0, 4.0)  # fast-tier pages / mean pages a head selects
    # twostage's form: stage-1 candidates as a multiple of the budget (or, with a candidate
    # top-p, at most that: the fewest reaching the bound's softmax mass), bits of its key copy
    twostage_candidates: float = TwoStageParams().candidates
    twostage_candidate_top_p: float = TwoStageParams().candidate_top_p
    twostage_bits: int = TwoStageParams().quant_bits
    twostage_bound_copy: bool = TwoStageParams().bound_copy   # stage 1 over the int8 bound copy
    seed: int = 0

    @classmethod
    def quick(cls) -> "EvalSpec":
        return cls(budgets=("64", "1/8", "1/4"), block_sizes=(16,), context=1024, decode_tokens=32,
                   text_samples=2, passkey_samples=6, passkey_lengths=(1024,), top_ps=(0.99,))

    @property
    def quick_samples(self) -> int:
        return self.text_samples + self.passkey_samples * len(self.passkey_lengths)

    def validate(self) -> "EvalSpec":
        for p in self.policies:
            if p not in ALL_POLICIES:
                raise ConfigError("--policies", f"unknown policy {p!r} (choose from {', '.join(ALL_POLICIES)})")
        if "dense" not in self.policies:
            self.policies = ("dense",) + tuple(self.policies)  # every figure is relative to dense
        for b in self.budgets:
            Budget.parse("--budgets", b)
        for bs in self.block_sizes:
            if bs not in (1, 2, 4, 8, 16, 32, 64, 128):
                raise ConfigError("--block-sizes", f"must be powers of two in 1..128, got {bs}")
        for name, v, lo in (("--context", self.context, 16), ("--decode-tokens", self.decode_tokens, 2),
                            ("--text-samples", self.text_samples, 0), ("--passkey-samples", self.passkey_samples, 0),
                            ("--dense-layers", self.dense_layers, 0),
                            ("--sink-pages", 0 if self.sink_pages is None else self.sink_pages, 0)):
            if not isinstance(v, int) or v < lo:
                raise ConfigError(name, f"must be an integer >= {lo}, got {v!r}")
        if not self.passkey_lengths or any(not isinstance(n, int) or n < 16 for n in self.passkey_lengths):
            raise ConfigError("--passkey-lengths", f"each must be an integer >= 16, got {self.passkey_lengths}")
        if self.decode_tokens >= self.context:
            raise ConfigError("--decode-tokens", f"must be below --context {self.context}")
        if self.text_samples + self.passkey_samples == 0:
            raise ConfigError("--text-samples", "text and pass-key samples cannot both be 0")
        if any(not (f > 0) for f in self.tier_factors):
            raise ConfigError("--tier-factors", f"must be > 0, got {self.tier_factors}")
        # the policy's own checks, naming the flag
        shared_validator("candidates")("--twostage-candidates", self.twostage_candidates)
        shared_validator("quant_bits")("--twostage-bits", self.twostage_bits)
        shared_validator("candidate_top_p")("--twostage-candidate-top-p", self.twostage_candidate_top_p)
        if not self.top_ps or any(not (0.0 < p <= 1.0) for p in self.top_ps):
            raise ConfigError("--top-p", f"each must be in (0, 1], got {self.top_ps}")
        return self


@dataclass
class Task:
    kind: str            # "text" | "passkey"
    prefill: list[int]
    feed: list[int]      # tokens fed at the decode steps
    targets: list[int]   # the token each decode step should predict
    length: int = 0      # a pass-key sample's prompt + answer tokens


@dataclass
class RunResult:
    policy: str
    budget: str | None
    block_size: int
    perplexity: float | None
    passkey_accuracy: float | None
    agreement: float
    mass_recall: float
    oracle_mass: float
    selection_recall: float
    pages_frac: float
    mean_pages: float | None
    bound_violations: int
    entropy: float | None
    seconds: float
    top_p: float | None = None
    ppl_vs_dense: float | None = None
    passkey_vs_dense: float | None = None
    # per pass-key length: {"n", "correct", "accuracy", "ci95": [lo, hi]} (Wilson interval)
    passkey: dict = field(default_factory=dict)
    decode_ms: float | None = None   # GPU decode step at 32K from a `bench decode` JSON, when given
    extra: dict = field(default_factory=dict)



def build_tasks(tok, tokens: np.ndarray, spec: EvalSpec) -> list[Task]:
    """Text windows of `spec.context` tokens at evenly spaced offsets of `tokens`, and
    pass-key samples of each of `spec.passkey_lengths` whose filler comes from the same tokens."""
    tasks = []
    C, T = spec.context, spec.decode_tokens
    if spec.text_samples:
        if len(tokens) < C:
            raise ConfigError("--context", f"the held-out text has {len(tokens)} tokens, fewer than {C}")
        starts = np.linspace(0, len(tokens) - C, spec.text_samples).astype(np.int64)
        for s in starts:
            w = [int(t) for t in tokens[s:s + C]]
            tasks.append(Task("text", w[:C - T], w[C - T:C - 1], w[C - T + 1:]))
    if spec.passkey_samples:
        from ...model.train.passkey import make_samples
        raw = getattr(tok, "tokenizer", tok)
        for n in spec.passkey_lengths:
            for smp in make_samples(raw, tokens, spec.passkey_samples, n, spec.seed):
                p, a = smp.prompt_ids, smp.answer_ids
                tasks.append(Task("passkey", p[:-1], [p[-1]] + a[:-1], list(a), n))
    return tasks
