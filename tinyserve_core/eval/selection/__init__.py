"""`tinyserve eval selection`: how much accuracy each page-selection policy keeps.

For every block size, held-out text windows and pass-key samples are prefilled once
(densely, as a server does) and the KV snapshot is restored before each
(policy, budget) run. Each run then decodes through the paged engine path
(`ModelRunner` + `PageSelector`), so selection acts exactly where it acts in serving:
on decode queries.

* perplexity: the last `decode_tokens` tokens of each text window are teacher-forced
  one decode step at a time; NLL of each next token.
* pass-key accuracy, per prompt length (default 200 samples at 1,024 and at 2,048 tokens,
  with 95% Wilson intervals): the prompt minus its last token is prefilled, the last
  token and the key's first digits are fed as decode steps; correct iff all 5 digits
  are the argmax (the same verdict greedy decoding gives, see model/train/evaluate.py).
* greedy agreement: share of decode positions whose argmax equals the dense run's.
* attention-mass recall, selection recall, pages attended, bound violations: from
  the selector's statistics, over the layers the policy selects on (the first
  `dense_layers` are dense by rule and left out).

* GPU decode step at 32K context: from a `tinyserve bench decode` JSON (`--decode-json`),
  for dense, quest and twostage; "not measured here" without one.

The default run is the target run (every policy, budgets 1/8 and 1/4, blocks 8, 16, 32);
`--budgets 64,128,256,512,1/8,1/4` is the budget sweep. `--quick` is a small smoke run
whose figures are rounded and never judged ("quick: N samples, not a verdict").
Results: a table on stdout, `--json`, `--md` and accuracy-vs-budget PNGs (`--plots`);
`--quick` writes its JSON and plots to out/ unless told where.
The command itself (flags, printing) is tinyserve_core.cli.eval."""

from __future__ import annotations

from .heldout import heldout_tokens
from .report import (attach_decode_times, check_targets, decode_step_target, machine, markdown_table, tier_table,
                     write_plots)
from .runs import evaluate, replay_tiers, run_configs, wilson_interval
from .spec import (ALL_POLICIES, DTYPES, FULL_BUDGETS, TARGET_BUDGETS, TIER_POLICIES_EVALUATED, EvalSpec,
                   RunResult, Task, build_tasks)

__all__ = [
    "ALL_POLICIES", "DTYPES", "FULL_BUDGETS", "TARGET_BUDGETS", "TIER_POLICIES_EVALUATED", "EvalSpec",
    "RunResult", "Task", "attach_decode_times", "build_tasks", "check_targets", "decode_step_target", "evaluate",
    "heldout_tokens", "machine", "markdown_table", "replay_tiers", "run_configs", "tier_table", "wilson_interval",
    "write_plots",
]
