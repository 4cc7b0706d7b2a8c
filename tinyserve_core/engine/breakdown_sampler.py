"""When a profiled GPU engine samples its per-op breakdown.

With CUDA graphs a decode step is timed whole (CUDA events around the replay); the
per-op breakdown needs an eager step, which at batch 64 with statistics costs ~20 replays
of the same step (H200, shipped model: ~25 ms against ~1.2 ms). A fixed cadence cannot
bound that cost: one sample in a 0.1 s static batch cost 20-40%. So samples are paid for:
every replayed step earns `budget` times its own time, and a sample is taken once the
credit covers what the last one cost beyond a replay (before the first, an estimate of
FIRST_COST replays), and at least `every` graph steps after the last. Over a run the
samples then cost at most `budget` of the replayed time. `budget` 0 keeps the fixed
cadence: the first graph step, then every `every`-th."""

from __future__ import annotations

FIRST_COST = 20.0   # replays: an eager per-op-timed step of the shipped model at batch 64, before one is measured
_EMA = 0.1          # weight of a new replay time in the running mean


class BreakdownSampler:
    def __init__(self) -> None:
        self.steps = 0          # graph-eligible steps (fixed cadence) or steps since the last sample
        self.credit_s = 0.0     # sampling time earned and not yet spent
        self.replay_s: float | None = None   # running mean of a replayed step's time
        self.cost_s: float | None = None     # what the last sample cost beyond a replay

    def due(self, every: int, budget: float) -> bool:
        """Whether this graph-eligible step runs eagerly for the breakdown (call once per
        such step)."""
        if budget <= 0:
            due = self.steps % every == 0
            self.steps += 1
            return due
        self.steps += 1
        if self.steps < every or self.replay_s is None:
            return False
        cost = self.cost_s if self.cost_s is not None else FIRST_COST * self.replay_s
        if self.credit_s < cost:
            return False
        self.credit_s -= cost
        self.steps = 0
        return True

    def replayed(self, timings: dict[str, float], budget: float) -> None:
        """A replayed step's timings (after its events were read)."""
        t = timings.get("total", 0.0)
        if t <= 0:
            return
        self.replay_s = t if self.replay_s is None else (1 - _EMA) * self.replay_s + _EMA * t
        self.credit_s += max(budget, 0.0) * t

    def sampled(self, timings: dict[str, float]) -> None:
        """A sampled (eager) step's timings: its cost beyond a replay prices the next."""
        t = timings.get("total", 0.0)
        if t > 0 and self.replay_s is not None:
            self.cost_s = max(t - self.replay_s, 0.0)
