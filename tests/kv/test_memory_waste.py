"""Memory waste on a vLLM-like workload (ShareGPT-like lognormal lengths, block 16).

vLLM reports under 4% of KV memory wasted with paging; ours must match on the same
kind of workload, and the manager's own figure must equal the waste recomputed from
the request lengths at every step."""

from tinyserve_core.kv.memory_sim import run_memory_workload


def test_waste_under_4_percent_and_agrees_with_lengths():
    r = run_memory_workload(num_requests=250, block_size=16, num_blocks=3072, seed=1)
    assert r.steps > 100 and r.peak_usage > 0.3   # a real, busy batch
    assert r.mean_waste < 0.04
    assert r.max_waste_disagreement < 1e-9
    # the reason paging wins: reserving the max length per request wastes most memory
    assert r.mean_reserved_waste > 10 * r.mean_waste


def test_waste_grows_with_block_size_as_tail_fragmentation_predicts():
    small = run_memory_workload(num_requests=120, block_size=8, seed=2)
    large = run_memory_workload(num_requests=120, block_size=128, seed=2)
    # only the last block of each sequence is partly empty: ~block_size/2 slots each
    assert small.mean_waste < 0.02 < 0.05 < large.mean_waste
    assert large.max_waste_disagreement < 1e-9


def test_preemption_under_pressure_keeps_every_request_and_prefix_hits_count():
    r = run_memory_workload(num_requests=120, block_size=16, num_blocks=600,
                            shared_prefix_len=64, num_groups=2, seed=3)
    assert r.preemptions > 0 and r.peak_usage == 1.0
    assert r.prefix_hit_rate > 0.2
    assert r.mean_waste < 0.04
