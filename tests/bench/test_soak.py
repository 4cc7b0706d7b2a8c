"""The engine soak in the suite: about 30 s of random episodes (policies, block sizes,
small pools, n up to 4, live updates, never-fitting requests) with the block manager's
invariants after every step, no request lost and no block leaked."""

import pytest
import torch

from tinyserve_core.bench.soak import run_soak


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_soak_holds_every_invariant(one_thread):
    # one live update per step boundary; `tinyserve soak` sends up to two
    r = run_soak(25, seed=14, max_updates=1)
    assert r.ok, "\n".join(r.failures[:5])
    assert r.steps >= 500 and r.finished >= 50 and r.rejected >= 1
    assert r.preemptions >= 1 and r.cow_copies >= 1 and r.updates_applied >= 50
    assert len(r.policies) >= 3 and len(r.block_sizes) >= 3


def test_soak_reports_a_lost_request_or_block(one_thread, monkeypatch):
    """The end checks catch what they are for: a block the manager forgets to free."""
    from tinyserve_core.kv.block_manager import BlockManager

    real_free = BlockManager.free
    calls = []

    def leaky_free(self, seq_id, *a, **k):
        calls.append(seq_id)
        if len(calls) == 3:
            return None   # the third sequence's blocks are never given back
        return real_free(self, seq_id, *a, **k)

    monkeypatch.setattr(BlockManager, "free", leaky_free)
    r = run_soak(0.5, seed=1, max_updates=1)
    assert not r.ok and any("leaked blocks" in f or "invariant" in f for f in r.failures)


def test_soak_cli_prints_the_figures(one_thread, capsys):
    from tinyserve_core.cli import main

    assert main(["soak", "--minutes", "0.02", "--seed", "3"]) in (0, 1)
    out = capsys.readouterr().out
    for word in ("steps", "requests", "preemptions", "copy-on-write", "live updates", "invariants"):
        assert word in out
    assert main(["soak", "--minutes", "nan"]) == 2
    assert "--minutes" in capsys.readouterr().err


def test_soak_reports_a_lost_live_update(one_thread, monkeypatch):
    from tinyserve_core.engine.engine import Engine

    monkeypatch.setattr(Engine, "_apply_updates", lambda self: None)
    r = run_soak(1.0, seed=2, max_updates=1)
    assert r.failure_kinds["live update lost"] >= 1 and r.updates_applied < r.updates_requested
