"""`tinyserve eval selection`: how much accuracy each page-selection policy keeps.

For every block size, held-out text windows and pass-key samples are prefilled once
(densely, as a server does) and the KV snapshot is restored before each
(policy, budget) run. Each run then decodes through the paged engine path
(`ModelRunner` + `PageSelector`), so selection acts exactly where it acts in serving:
on decode queries.

* perplexity: the last `decode_tokens` tokens of each text window are teacher-forced
  one decode step at a time; NLL of each next token.
* pass-key accuracy: the prompt minus its last token is prefilled, the last token and
  the key's first digits are fed as decode steps; correct iff all 5 digits are the
  argmax (the same verdict greedy decoding gives, see model/train/evaluate.py).
* greedy agreement: share of decode positions whose argmax equals the dense run's.
* attention-mass recall, selection recall, pages attended, bound violations: from
  the selector's statistics, over the layers the policy selects on (the first
  `dense_layers` are dense by rule and left out).

Results: a table on stdout, `--json`, `--md` and accuracy-vs-budget PNGs (`--plots`).
The command itself (flags, printing) is tinyserve_core.cli.eval."""

from __future__ import annotations

from .heldout import heldout_tokens
from .report import check_targets, machine, markdown_table, tier_table, write_plots
from .runs import evaluate, replay_tiers
from .spec import (ALL_POLICIES, DTYPES, FULL_BUDGETS, TIER_POLICIES_EVALUATED, EvalSpec, RunResult, Task,
                   build_tasks)

__all__ = [
    "ALL_POLICIES", "DTYPES", "FULL_BUDGETS", "TIER_POLICIES_EVALUATED", "EvalSpec", "RunResult", "Task",
    "build_tasks", "check_targets", "evaluate", "heldout_tokens", "machine", "markdown_table", "replay_tiers",
    "tier_table", "write_plots",
]
