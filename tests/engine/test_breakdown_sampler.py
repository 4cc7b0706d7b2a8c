"""Profiling of a GPU engine is paid for out of a share of the replayed steps' wall time
(engine/breakdown_sampler.py): the timing of every replay and the whole wall time a
sampled eager step adds; or breakdowns come at a fixed cadence when that share is 0."""

from __future__ import annotations

import pytest

from tinyserve_core.engine.breakdown_sampler import BreakdownSampler


def _run(sampler, steps, every, budget, replay_s=1e-3, sample_s=None, timing_s=0.0):
    """Drive `steps` graph-eligible steps: an unprofiled replay takes `replay_s`, its timing
    adds `timing_s`, a sampled step takes `sample_s` in all. Returns the sampled step
    indices and the time profiling added."""
    taken, extra = [], 0.0
    for i in range(steps):
        if sampler.due(every, budget):
            taken.append(i)
            sampler.sampled(sample_s, budget)
            extra += sample_s - replay_s
        else:
            sampler.replayed(replay_s + timing_s, timing_s, budget)
            extra += timing_s
    return taken, extra


def test_budget_zero_keeps_the_fixed_cadence_from_the_first_step():
    s = BreakdownSampler()
    taken, _ = _run(s, 13, 4, 0.0, sample_s=0.02)
    assert taken == [0, 4, 8, 12] and s.samples == 4 and s.spent_s == 0.0


@pytest.mark.parametrize("timing_s", [0.0, 1e-5])
@pytest.mark.parametrize("sample_s", [0.002, 0.02, 0.2])
def test_profiling_costs_at_most_the_budget_of_the_replayed_time(sample_s, timing_s):
    s = BreakdownSampler()
    taken, extra = _run(s, 20000, 16, 0.05, replay_s=1e-3, sample_s=sample_s, timing_s=timing_s)
    plain = 20000 * 1e-3     # the same steps unprofiled
    # by construction: what was spent never exceeds what was earned by more than the one
    # sample whose cost was only estimated when it was taken
    assert taken and extra <= 0.05 * plain + sample_s and s.samples == len(taken)
    assert s.spent_s == pytest.approx(extra) and s.earned_s == pytest.approx(0.05 * plain)
    # and the budget is used, not hoarded: short of it by at most the one sample's cost
    # the credit is waiting for
    assert extra >= 0.05 * plain - sample_s


def test_the_timing_of_every_replay_is_charged():
    # timing that takes 4% of a replay leaves 1% of the 5% for breakdowns: about a fifth
    # of the samples the same run takes when timing is free
    free, _ = _run(BreakdownSampler(), 40000, 16, 0.05, sample_s=0.02)
    costly, extra = _run(BreakdownSampler(), 40000, 16, 0.05, sample_s=0.02, timing_s=4e-5)
    assert 0 < len(costly) < len(free) / 3
    assert extra <= 0.05 * 40000 * 1e-3 + 0.02
    # timing alone above the budget: no breakdown at all (graph times still come)
    none, _ = _run(BreakdownSampler(), 40000, 16, 0.05, sample_s=0.02, timing_s=6e-5)
    assert none == []


def test_a_sample_is_charged_its_real_cost_and_repaid_before_the_next():
    s = BreakdownSampler()
    taken, _ = _run(s, 7000, 16, 0.05, replay_s=1e-3, sample_s=0.1)
    earn, cost = 0.05 * 1e-3, 0.1 - 1e-3          # per replay; a sample beyond a replay
    # the first came after `every` steps, on the allowance of one sample; it cost 99
    # replays: the next waits for that debt and its own measured cost ...
    assert taken[0] == 15
    assert taken[1] - taken[0] == pytest.approx((2 * cost - (taken[0] + 1) * earn) / earn, abs=2)
    # ... and from then on each waits for the last one's measured cost
    assert taken[2] - taken[1] == pytest.approx(cost / earn, abs=2)


def test_the_first_sample_comes_after_every_steps_however_dear_it_is():
    # a GUI user watching a GPU engine sees a decode breakdown within `every` graph steps,
    # even where an eager step costs 20-100 replays (a price guessed up front made the
    # first wait 20 / 0.05 = 400 replays: none in a 64-request run)
    for sample_s in (0.002, 0.02, 0.1):
        taken, _ = _run(BreakdownSampler(), 300, 16, 0.05, replay_s=1e-3, sample_s=sample_s)
        assert taken[0] == 15
    cheap = BreakdownSampler()
    taken, _ = _run(cheap, 200, 16, 1.0, replay_s=1e-3, sample_s=1e-3)
    assert all(b - a >= 16 for a, b in zip(taken, taken[1:]))   # never closer than `every`


def test_the_first_sample_waits_for_earlier_charges_to_be_repaid():
    # a prefill's timing (1 ms of host time) was charged before any replay earned: the
    # first sample waits the 20 replays that repay it at 5% of 1 ms, not only `every`
    s = BreakdownSampler()
    s.charged(1e-3, 0.05)
    taken, _ = _run(s, 300, 16, 0.05, replay_s=1e-3, sample_s=0.02)
    assert taken[0] == 20
    assert s.spent_s <= s.earned_s + 0.02


def test_a_step_without_time_earns_nothing():
    s = BreakdownSampler()
    for _ in range(1000):
        s.replayed(0.0, 0.0, 0.05)
    assert s.credit_s == 0.0 and not s.due(1, 0.05)
