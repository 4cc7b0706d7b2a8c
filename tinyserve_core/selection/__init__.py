"""Query-aware page selection: which KV pages each decode query attends to.

`PageSelector` is the model runner's hook; policies (`dense`, `quest`, `adaptive`,
`twostage`, `streaming`, `h2o`, and `oracle` / `oracle_p` as the measuring sticks) are looked up by name in `POLICIES`; `StatsRecorder` measures
them against true attention; the two-tier page cache lives in `kv.tiers`."""

from .base import Policy, SelectContext, Selection
from .params import Budget
from .registry import POLICIES, make_policy, policy_names, policy_parameters
from .selector import PageSelector, build_selector
from .recorder import StatsRecorder
from .stats import SelectionSummary, summarize_history

__all__ = [
    "Budget", "POLICIES", "PageSelector", "Policy", "SelectContext", "Selection",
    "SelectionSummary", "StatsRecorder", "build_selector", "make_policy", "policy_names", "policy_parameters",
    "summarize_history",
]
