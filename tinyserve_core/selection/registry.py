"""Policies by name: the one place the CLI, config files and the GUI look them up."""

from __future__ import annotations

from ..errors import ConfigError
from .adaptive import AdaptivePolicy
from .base import Policy
from .dense import DensePolicy
from .h2o import H2OPolicy
from .oracle import OraclePolicy, OracleTopPPolicy
from .quest import QuestPolicy
from .streaming import StreamingPolicy
from .twostage import TwoStagePolicy

POLICIES: dict[str, type[Policy]] = {
    c.name: c for c in (DensePolicy, QuestPolicy, AdaptivePolicy, TwoStagePolicy, StreamingPolicy, H2OPolicy,
                          OraclePolicy, OracleTopPPolicy)
}


def policy_names() -> tuple[str, ...]:
    return tuple(POLICIES)


def make_policy(name: str, **params) -> Policy:
    cls = POLICIES.get(name.strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError("policy", f"unknown policy {name!r} (choose from {', '.join(POLICIES)})")
    return cls(**params)


def fp8_cache_conflict(name: str) -> str | None:
    """Why the policy `name` cannot run over an FP8 KV cache, or None. Such a cache keeps its
    page bounds (as codes under the page scales), and policies reading the keys themselves
    (true attention) read them dequantised, but it keeps no quantised key copy."""
    cls = POLICIES[name.strip().lower()]
    if cls.reads_key_copy:
        return f"the {cls.name} policy reads a quantised key copy, which an FP8 cache does not keep"
    return None


def policy_parameters(name: str) -> tuple[str, ...]:
    """The parameter names a policy accepts (for GUI forms and config validation)."""
    make_policy(name)  # validates the name
    return tuple(sorted(POLICIES[name.strip().lower()]._validators))
