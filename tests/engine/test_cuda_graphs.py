"""Decode steps replayed from CUDA graphs give what eager steps give, for the dense path and
for a policy captured with the step (quest), with ragged batches that leave padding rows;
padding writes nothing to the cache (`pytest -m cuda`; skipped without a GPU). The graph runs
a padded batch and block table, so cuBLAS and the split-K plan may round differently: the
logits agree to fp16 rounding, not bit for bit."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
from tinyserve_core.model.loader import default_model_dir, load_model
from tinyserve_core.selection import PageSelector

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

BS = 16


def _run(graphs: bool, selector_args: dict | None, lens=(700, 33, 300)):
    model, _ = load_model(str(default_model_dir()), device="cpu", dtype=torch.float32)
    sel = None if selector_args is None else PageSelector(**selector_args)
    runner = ModelRunner(model, 256, BS, device="cuda", dtype=torch.float16, selector=sel, cuda_graphs=graphs)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 4000, (n,), generator=g).tolist() for n in lens]
    tables, at = [], 1  # block 0 stays unused: padding rows point at it
    for n in lens:
        need = -(-(n + 8) // BS)
        tables.append(list(range(at, at + need)))
        at += need
    for i, p in enumerate(prompts):
        runner.prefill([PrefillItem(i, p, 0, tables[i])])
    unused = [0] + list(range(at, 256))
    before = [c[unused].clone() for c in (*runner.kv.k_caches, *runner.kv.v_caches, *runner.kv.metas)]
    out = []
    active = list(range(len(lens)))
    for s in range(6):
        if s == 3:
            active = active[:2]  # the batch shrinks: a smaller bucket, new padding rows
        items = [DecodeItem(i, 7 + s, lens[i] + s, tables[i]) for i in active]
        out.append(runner.decode(items).logits.cpu())
    after = [c[unused] for c in (*runner.kv.k_caches, *runner.kv.v_caches, *runner.kv.metas)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # no row wrote outside its pages
    return out, runner


@pytest.mark.parametrize("selector_args", [None, {"policy": "dense"},
                                           {"policy": "quest", "budget": 128, "dense_layers": 1}])
def test_graph_replay_equals_eager(selector_args):
    eager, r0 = _run(False, selector_args)
    graph, r1 = _run(True, selector_args)
    assert r0._graphs is None and r1._graphs is not None and len(r1._graphs._graphs) == 2  # 3 rows, then 2
    for a, b in zip(eager, graph):
        assert a.shape == b.shape and torch.isfinite(b).all()
        assert ((a - b).norm() / a.norm()).item() < 1e-2


def test_statistics_and_tiers_are_captured_with_the_step_and_equal_eager():
    args = {"policy": "quest", "budget": 128, "dense_layers": 1, "stats": True, "tier_pages": 4}
    _, r0 = _run(False, args)
    _, r1 = _run(True, args)
    assert r1._graphs is not None and len(r1._graphs._graphs) == 2   # statistics no longer force eager
    hist = []
    for r in (r0, r1):
        r.selector.take_summary()            # deliver the step still in flight
        hist.append(list(r.selector.stats.history))
    assert [s.step for s in hist[1]] == list(range(6)) and len(hist[0]) == 6
    for a, b in zip(*hist):
        assert a.records == b.records and a.layers == b.layers
        assert a.bound_violations == b.bound_violations == (0,) * len(a.layers)
        assert b.mass_recall == pytest.approx(a.mass_recall, abs=2e-2)
        assert b.pages_selected == pytest.approx(a.pages_selected, abs=0.5)
        assert sum(b.tier_hits) + sum(b.tier_misses) > 0


def test_host_side_policies_run_eagerly():
    _, runner = _run(True, {"policy": "h2o", "budget": 128, "dense_layers": 1})
    assert runner._graphs is None  # h2o decides on the host every step


def test_profiling_keeps_graphs_times_replays_whole_and_samples_the_breakdown():
    model, _ = load_model(str(default_model_dir()), device="cpu", dtype=torch.float32)
    runner = ModelRunner(model, 64, BS, device="cuda", dtype=torch.float16, profile=True, profile_every=4,
                         profile_budget=0.0)   # the fixed cadence
    prompt, table = list(range(1, 40)), [1, 2, 3, 4]
    runner.prefill([PrefillItem(0, prompt, 0, table)])
    kinds = []
    for s in range(5):
        out = runner.decode([DecodeItem(0, 7, len(prompt) + s, table)])
        assert out.timer is not None or "attention" in out.timings   # a replay's events wait for finish()
        out.finish()
        assert out.timings["total"] > 0
        kinds.append(sorted(out.timings))
    assert "attention" in kinds[0] and "attention" in kinds[4]      # eager breakdowns
    assert kinds[1] == kinds[2] == kinds[3] == ["total"]             # replays, timed whole
    assert runner._graphs is not None and runner._graphs._graphs


def test_profiled_steps_reuse_their_timing_events():
    # the replays' event pairs, the eager breakdowns' and the engine's DeviceSpan marks come
    # from one pool: once a breakdown step has filled it, steps create no more events
    from tinyserve_core.engine.config import EngineConfig
    from tinyserve_core.engine.engine import Engine
    from tinyserve_core.engine.sampling import SamplingParams
    eng = Engine(EngineConfig.from_dict(dict(device="cuda", num_blocks=128, block_size=BS, profile=True,
                                             profile_every=4, profile_budget=0.0)))
    eng.add_request(list(range(1, 40)), SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))
    created = []
    while eng.has_unfinished():
        rec = eng.step()
        assert rec.op_timings_s["total"] > 0 and rec.metrics.device_time_s > 0
        created.append(eng.runner.events.created)
    assert len(created) == 24 and created[-1] == created[6]


def test_with_statistics_the_graph_width_follows_the_longest_table():
    """Statistics take a dense pass over every page of the table: their graphs are
    captured at the step's width in half-octave buckets (45 pages -> 48), the others at
    the model's longest (a model this small stays under the selection width floor)."""
    _, plain = _run(True, {"policy": "quest", "budget": 128, "dense_layers": 1})
    _, stats = _run(True, {"policy": "quest", "budget": 128, "dense_layers": 1, "stats": True})
    assert {k[2] for k in plain._graphs._graphs} == {plain._inputs.tables_rows.max_pages} == {128}
    assert {k[2] for k in stats._graphs._graphs} == {48}


@pytest.mark.parametrize("selector_args", [None, {"policy": "quest", "budget": 128, "dense_layers": 1}])
def test_programmatic_dependent_launch_inside_graphs_changes_no_bit(selector_args):
    # Every kernel of the step is captured with PDL (csrc/launch.h): the next grid is
    # scheduled early and waits for the last one in griddepcontrol.wait. A kernel that
    # touched memory before that wait would race; the same graphs without PDL are the truth.
    from tinyserve_core.kernels._backend import build
    ext = build()
    try:
        ext.set_pdl(False)
        plain, _ = _run(True, selector_args)
        ext.set_pdl(True)
        pdl, _ = _run(True, selector_args)
    finally:
        ext.set_pdl(True)
    for a, b in zip(plain, pdl):
        assert torch.equal(a, b)


def test_a_failed_capture_leaves_the_devices_random_numbers_usable():
    # A capture that raises leaves torch's CUDA generator marked as capturing, and the next
    # random draw raised "Offset increment outside graph capture" (an H200 run: a runner
    # whose capture fell back to eager broke a later test's torch.randint).
    from tinyserve_core.engine.cuda_graphs import release_rng_after_failed_capture
    x = torch.ones(1, device="cuda")
    with pytest.raises(RuntimeError):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            x.item()   # a host sync: not capturable
    release_rng_after_failed_capture(x.device)
    assert torch.randint(0, 10, (64,), device="cuda").max().item() < 10
