"""Breakdown samples of a profiled GPU engine are paid for from a share of the replayed time
(engine/breakdown_sampler.py), or come at a fixed cadence when that share is 0."""

from __future__ import annotations

from tinyserve_core.engine.breakdown_sampler import FIRST_COST, BreakdownSampler


def _run(sampler, steps, every, budget, replay_s=1e-3, sample_s=None):
    """Drive `steps` graph-eligible steps; a sampled step takes `sample_s`. Returns the
    sampled step indices and the time spent beyond replays."""
    taken, extra = [], 0.0
    for i in range(steps):
        if sampler.due(every, budget):
            taken.append(i)
            sampler.sampled({"total": sample_s})
            extra += sample_s - replay_s
        else:
            sampler.replayed({"total": replay_s}, budget)
    return taken, extra


def test_budget_zero_keeps_the_fixed_cadence_from_the_first_step():
    taken, _ = _run(BreakdownSampler(), 13, 4, 0.0, sample_s=0.02)
    assert taken == [0, 4, 8, 12]


def test_samples_cost_at_most_the_budget_of_the_replayed_time():
    for sample_s in (0.002, 0.02, 0.2):
        s = BreakdownSampler()
        taken, extra = _run(s, 20000, 16, 0.05, replay_s=1e-3, sample_s=sample_s)
        replayed = (20000 - len(taken)) * 1e-3
        assert taken and extra <= 0.05 * replayed + 1e-12
        # and the budget is used, not hoarded: short of it by at most one sample's cost and
        # the credit the first sample waited for (its cost was estimated, not known)
        assert extra >= 0.05 * replayed - sample_s - FIRST_COST * 1e-3


def test_the_first_sample_waits_for_its_estimated_cost_and_the_minimum_spacing():
    s = BreakdownSampler()
    taken, _ = _run(s, 1000, 16, 0.05, replay_s=1e-3, sample_s=0.02)
    # FIRST_COST replays of credit at 5% per replay: FIRST_COST / 0.05 steps
    assert taken[0] == round(FIRST_COST / 0.05)
    cheap = BreakdownSampler()
    taken, _ = _run(cheap, 200, 16, 1.0, replay_s=1e-3, sample_s=1e-3)
    assert all(b - a >= 16 for a, b in zip(taken, taken[1:]))   # never closer than `every`


def test_a_step_without_timings_earns_nothing():
    s = BreakdownSampler()
    for _ in range(1000):
        s.replayed({}, 0.05)
    assert s.credit_s == 0.0 and not s.due(1, 0.05)
