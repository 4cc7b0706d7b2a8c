"""When a profiled GPU engine samples its per-op breakdown, and what profiling may cost.

With CUDA graphs a decode step is timed whole (CUDA events around the replay); the
per-op breakdown needs an eager step, which at batch 64 with statistics costs ~20 replays
of the same step (H200, shipped model). A fixed cadence cannot bound that cost: one
sample in a 0.1 s static batch cost 20-40%. So profiling is paid for out of a budget, in
wall-clock time on the host (the `clock`), which is what a run loses:

* every replayed step earns `budget` times what it would have taken unprofiled (its
  wall time less the host time its timing events took) and is charged that timing time;
* a sampled step is charged its wall time beyond an unprofiled replay (a running mean):
  the eager forward's launches and its event pairs, reading them, the bytes and selected
  token counts, everything the host did for it, not only the GPU time its events saw;
* an eager step that is broken down anyway (prefill; a decode step with no graph) is
  charged the host time its timing took, and earns nothing;
* a sample is taken once the credit covers what the last one cost, and at least `every`
  graph steps after the last; the first, whose cost is not known yet, once `every` graph
  steps passed with what was charged so far repaid (credit not below zero).

What a sample really cost is charged when it is known, so the credit may go below zero
and the next sample waits until it is repaid: over a run, profiling costs at most
`budget` of the unprofiled replayed time plus one sample. The first sample is taken on
that one sample's allowance rather than after credit for a guessed price: a price of ~20
replays at a 5% budget meant 400 replays before any decode breakdown (none in the
64-request bench runs on an H200, and none for a GUI user's single short request), while
`every` now says when the first comes. (Were the timing events alone to cost more than
the budget, no breakdown would be sampled; graph times still come every step.) `budget`
0 keeps the fixed cadence: the first graph step, then every `every`-th, with no
accounting."""

from __future__ import annotations

import time
from typing import Callable

_EMA = 0.1          # weight of a new replay time in the running mean


class BreakdownSampler:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock      # host seconds: what steps and profiling cost are measured with
        self.steps = 0          # graph-eligible steps (fixed cadence) or steps since the last sample
        self.credit_s = 0.0     # profiling time earned and not yet spent (may be negative)
        self.replay_s: float | None = None   # running mean of an unprofiled replayed step's wall time
        self.cost_s: float | None = None     # what the last sample cost beyond a replay
        self.earned_s = 0.0     # totals over the run, for reports and tests
        self.spent_s = 0.0
        self.samples = 0

    def due(self, every: int, budget: float) -> bool:
        """Whether this graph-eligible step runs eagerly for the breakdown (call once per
        such step)."""
        if budget <= 0:
            due = self.steps % every == 0
            self.steps += 1
            self.samples += due
            return due
        self.steps += 1
        if self.steps < every or self.replay_s is None:
            return False
        # before any sample was measured its price is 0: the first waits only for `every`
        # steps and for the charges so far (prefill timing, replays' timing) to be repaid
        cost = self.cost_s if self.cost_s is not None else 0.0
        if self.credit_s < cost:
            return False
        self.steps = 0
        self.samples += 1
        return True

    def replayed(self, wall_s: float, overhead_s: float, budget: float) -> None:
        """A replayed, timed step: its wall time and the host time its timing took."""
        plain = wall_s - overhead_s
        if plain <= 0 or budget <= 0:
            return
        self.replay_s = plain if self.replay_s is None else (1 - _EMA) * self.replay_s + _EMA * plain
        self._account(budget * plain, overhead_s)

    def sampled(self, wall_s: float, budget: float) -> None:
        """A sampled (eager, per-op timed) step's wall time: its cost beyond a replay is
        charged and prices the next sample."""
        if budget <= 0 or self.replay_s is None:
            return
        self.cost_s = max(wall_s - self.replay_s, 0.0)
        self._account(budget * self.replay_s, self.cost_s)

    def charged(self, overhead_s: float, budget: float) -> None:
        """An eager step broken down anyway (prefill, no graph for it): the host time its
        timing took, which earns nothing (only replays earn)."""
        if budget > 0:
            self._account(0.0, overhead_s)

    def _account(self, earned: float, spent: float) -> None:
        self.credit_s += earned - spent
        self.earned_s += earned
        self.spent_s += spent
