"""Statistics on the GPU (`pytest -m cuda`, skipped without a GPU): the batched device
computation equals the CPU's on the same cache, the step's copy goes to pinned memory
with an event, and the engine keeps its CUDA graphs with statistics and profiling on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tinyserve_core.selection import PageSelector

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

LAYER = type("Attn", (), {"scale": 0.125})()


def _to(kv, device):
    return SimpleNamespace(**{k: [t.to(device) for t in getattr(kv, k)] for k in ("k_caches", "v_caches", "metas")},
                           block_size=kv.block_size)


@pytest.mark.parametrize("head_dim", [16, 64])   # 64: the statistics kernel; 16: its torch spec
def test_gpu_statistics_equal_the_cpu_and_arrive_through_pinned_memory(make_kv, head_dim):
    kv, tables, lens = make_kv([300, 45, 170, 260], num_kv_heads=2, head_dim=head_dim, block_size=16, num_layers=2)
    q = torch.randn(4, 4, head_dim)
    summaries = []
    for dev in ("cpu", "cuda"):
        sel = PageSelector("quest", budget=64, dense_layers=0, stats=True)
        kvd = _to(kv, dev)
        for layer in range(2):
            sel.select(LAYER, q.to(dev), kvd, layer, tables.to(dev), lens.to(dev), [0, 1, 2, 3])
        sel.end_step([0, 1, 2, 3])
        if dev == "cuda":
            f = sel.stats._inflight[0]
            assert f.host.is_pinned() and f.event is not None
        summaries.append(sel.collect()[0])
    a, b = summaries
    assert a.bound_violations == b.bound_violations == (0, 0) and a.records == b.records
    assert b.mass_recall == pytest.approx(a.mass_recall, rel=1e-4)
    assert b.pages_selected == a.pages_selected and b.selection_recall == pytest.approx(a.selection_recall)
    # the columnar records of every (sequence, layer, kv-head) agree too
    da, db = a.detail, b.detail
    assert da.seq_ids.tolist() == db.seq_ids.tolist() == [0, 1, 2, 3] and da.selected.shape == db.selected.shape
    assert (da.selected == db.selected).all() and (da.oracle != db.oracle).mean() < 0.02   # near-ties may swap
    assert np.allclose(da.scores, db.scores, rtol=1e-3, atol=1e-3, equal_nan=True)


def test_engine_keeps_graphs_with_statistics_and_profiling():
    from tinyserve_core.engine.config import EngineConfig
    from tinyserve_core.engine.engine import Engine
    from tinyserve_core.engine.sampling import SamplingParams
    cfg = EngineConfig.from_dict(dict(device="cuda", num_blocks=512, block_size=16, policy="quest", budget=64,
                                      dense_layers=2, stats=True, profile=True, profile_every=4,
                                      profile_budget=0.0))   # the fixed cadence
    eng = Engine(cfg)
    for p in ("The list type", "def read_file(path):", "A dictionary maps keys to"):
        eng.add_request(p * 20, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    records = []
    while eng.has_unfinished():
        records.append(eng.step())
    assert eng.runner._graphs is not None and eng.runner._graphs._graphs      # graphs kept
    decode = [r for r in records if r.phase == "decode"]
    assert [s.step for r in records for s in r.selection] == list(range(len(decode)))
    assert all(r.op_timings_s.get("total", 0) > 0 for r in decode)
    assert sum("attention" in r.op_timings_s for r in decode) == -(-len(decode) // 4)  # sampled breakdowns
    assert all(r.metrics.device_time_s > 0 and r.metrics.host_time_s > 0 for r in decode)
    assert all(r.metrics.device_time_s < r.metrics.step_time_s for r in decode)
    for r in records:   # each decode step's records as columns, its batch's rows
        for s in r.selection:
            assert s.detail.seq_ids.tolist() == list(decode[s.step].seq_ids)
            assert s.detail.per_head.shape[:2] == (6 - 2, len(decode[s.step].seq_ids))   # layers past the 2 dense
