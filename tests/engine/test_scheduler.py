"""The scheduler owns sequences and their blocks: after a step it forks the siblings of
a first prefill, registers full blocks with the prefix cache, finishes what stops and
says what finished; preemptions come back in the schedule result."""

from __future__ import annotations

from tinyserve_core.engine.request import Request, Sequence, SeqStatus
from tinyserve_core.engine.sampling import SamplingParams
from tinyserve_core.engine.scheduler import ChildStart, Scheduler
from tinyserve_core.kv.block_manager import BlockManager
from tinyserve_core.observe.events import EventSink


def _setup(num_blocks=16, **params):
    bm = BlockManager(num_blocks, 4)
    sink = EventSink(enabled=True)
    sched = Scheduler(bm, 8, 64, sink, max_model_len=64, eos_token_id=0)
    return bm, sink, sched


def _add(sched, prompt, rid="r", **params):
    req = Request(rid, list(prompt), SamplingParams(**params), 0.0)
    seq = Sequence(req, prompt, None, is_parent=True)
    req.seqs.append(seq)
    sched.add(seq)
    return req, seq


def test_postprocess_forks_siblings_caches_blocks_and_finishes():
    bm, sink, sched = _setup()
    req, parent = _add(sched, list(range(1, 11)), n=3, max_tokens=2, ignore_eos=True)
    batch = sched.schedule(now=1.5)
    assert batch.is_prefill and batch.to_fork == [0] and req.first_scheduled_s == 1.5
    post = sched.postprocess(batch, [50], {0: [ChildStart(51, 1), ChildStart(52, 2)]}, now=2.0)
    children = req.seqs[1:]
    assert post.num_generated == 3 and post.finished == [] and req.first_token_s == 2.0
    assert [s.token_ids[-1] for s in req.seqs] == [50, 51, 52]
    assert sched.running == [parent, *children] and all(c.status is SeqStatus.RUNNING for c in children)
    table = bm.block_table(parent.seq_id)
    assert all(bm.block_table(c.seq_id) == table for c in children)
    assert bm.blocks_snapshot().ref_cnt[table].tolist() == [3, 3, 3]
    assert bm.pool.blocks[table[0]].block_hash is not None   # full and computed: cached
    assert parent.forked  # a re-prefill after preemption forks nothing
    # the decode step: every sequence reaches max_tokens and the request is done
    batch = sched.schedule()
    post = sched.postprocess(batch, [60, 61, 62], {}, now=3.0)
    assert post.finished == [req] and req.finish_s == 3.0 and sched.running == []
    assert [s.finish_reason for s in req.seqs] == ["length"] * 3
    assert [e.kind for e in sink.drain()].count("finish") == 3
    assert bm.seq_ids() == []


def test_preemption_is_reported_in_the_schedule_result():
    bm, sink, sched = _setup(num_blocks=4)
    _, a = _add(sched, [1, 2, 3, 4, 5, 6, 7], "a", max_tokens=8, ignore_eos=True)
    _, b = _add(sched, [8, 9, 10, 11, 12, 13, 14], "b", max_tokens=8, ignore_eos=True)
    batch = sched.schedule()
    sched.postprocess(batch, [20, 21], {}, now=1.0)      # 8 tokens each
    batch = sched.schedule()                             # their slots fill 2 blocks each
    assert batch.seqs == [a, b] and batch.preempted == []
    sched.postprocess(batch, [22, 23], {}, now=2.0)
    batch = sched.schedule()                             # a needs a third block: b goes
    assert batch.preempted == [b] and batch.seqs == [a]
    assert b.status is SeqStatus.WAITING and sched.waiting[0] is b and sched.num_preemptions == 1
    assert any(e.kind == "preempt" and e.seq_id == b.seq_id for e in sink.drain())
