"""`bench engine`: the comparison with HF says how far greedy outputs agree, and our
engine's rows (the GUI configuration, its peers, an overloaded stream) carry
latencies, host ms per step and device busy share; run small on the CPU."""

from __future__ import annotations

import pytest

from tinyserve_core.bench.engine import compare_outputs, compare_with_hf
from tinyserve_core.cli.bench import format_engine_rows


def test_compare_outputs_counts_identical_requests_and_first_differences():
    ours = [[1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8]]
    peer = [[1, 2, 3], [1, 9, 3], [0, 5, 6], [7, 8, 9]]
    share, first = compare_outputs(ours, peer)
    assert share == 0.25
    assert first == pytest.approx((1 + 0 + 2) / 3)   # a missing tail differs where it starts
    assert compare_outputs(ours, ours) == (1.0, None)


@pytest.mark.slow
def test_bench_engine_rows_on_the_cpu():
    pytest.importorskip("transformers")
    res = compare_with_hf(None, "cpu", requests=3, prompt_len=16, max_tokens=4, rate=50.0, seed=0,
                          overload=(6, 1000.0))
    names = [(r.scenario, r.system) for r in res.rows]
    assert names[:6:2] == [("static, uniform", "tinyserve"), ("static, mixed", "tinyserve"),
                           ("poisson 50/s, mixed", "tinyserve")]
    assert [n for n, _ in names[6:]] == ["static, quest", "static, quest + stats", "static, GUI: quest + stats + profile",
                                         "poisson, quest", "poisson, quest + stats",
                                         "poisson, GUI: quest + stats + profile", "overload: 6 at 1000/s"]
    for r in res.rows[:6]:
        assert r.identical_share == 1.0 and r.first_diff_mean is None   # fp32 on the CPU: the same tokens
    assert all((r.serving is None) == (r.system != "tinyserve") for r in res.rows)
    for r in (r for r in res.rows if r.system == "tinyserve"):
        v = r.serving
        assert r.tokens_per_s > 0 and v["ttft_p50_ms"] is not None and v["tpot_p99_ms"] is not None
        assert v["host_ms_per_step"] > 0 and 0 < v["device_busy_pct"] <= 100
    table = format_engine_rows(res.rows)
    assert "host ms/step" in table and "overload: 6 at 1000/s" in table and "100%" in table
    cost = res.to_json()["cost_vs_quest"]   # each configuration against quest on its workload
    assert set(cost) == {f"{w}, {c}" for w in ("static", "poisson")
                         for c in ("quest", "quest + stats", "GUI: quest + stats + profile")}
    assert cost["static, quest"] == 1.0 and "vs quest" in table


def test_bench_engine_without_the_peer_runs_our_rows_only():
    res = compare_with_hf(None, "cpu", requests=2, prompt_len=8, max_tokens=3, rate=50.0, seed=0,
                          overload=None, peer=False)
    assert [r.scenario for r in res.rows] == [f"{w}, {c}" for w in ("static", "poisson")
                                              for c in ("quest", "quest + stats", "GUI: quest + stats + profile")]
    assert all(r.system == "tinyserve" and r.serving["host_ms_per_step"] > 0 for r in res.rows)
    # the profiled rows say what profiling was charged: on the CPU (no graphs, every step
    # broken down, no breakdown sampled) the timers' own host time
    profiled = [r for r in res.rows if "profile" in r.scenario]
    assert profiled and all(0 < r.serving["profile_charged_pct"] < 100 and r.serving["breakdowns"] == 0
                            for r in profiled)
    assert all("profile_charged_pct" not in r.serving for r in res.rows if r not in profiled)
    assert "profiling charged" in format_engine_rows(res.rows)
    # the static batch's configurations ran three times in turn; each row is its median run
    for r in res.rows:
        runs = r.serving.get("runs_tok_per_s")
        if r.scenario.startswith("static"):
            assert len(runs) == 3 and runs == sorted(runs) and r.tokens_per_s == pytest.approx(runs[1])
        else:
            assert runs is None
    assert "median of 3 runs" in format_engine_rows(res.rows)
