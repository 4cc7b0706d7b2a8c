"""Continuous-batching scheduler: FCFS admission, prefill steps before decode steps
(as nano-vllm), preemption by recompute when the block pool runs dry.

Every step is either a prefill batch (new or preempted sequences, up to the token
budget) or a decode batch (one token for every running sequence). When a running
sequence cannot get a slot, the most recently admitted running sequence is preempted:
its blocks are freed and it goes to the front of the waiting queue, to be recomputed
later (with prefix caching its full blocks are often still there)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..kv.block_manager import BlockManager
from ..observe.events import EventSink, Preempt
from .request import Sequence, SeqStatus


@dataclass
class ScheduleResult:
    seqs: list[Sequence]
    is_prefill: bool
    cow_pairs: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    num_tokens: int = 0


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int,
                 max_num_batched_tokens: int, sink: EventSink | None = None,
                 on_preempt=None):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.sink = sink
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.on_preempt = on_preempt  # e.g. the selector forgets the sequence's state

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduleResult:
        result = self._schedule_prefill()
        if result.seqs:
            return result
        return self._schedule_decode()

    def _schedule_prefill(self) -> ScheduleResult:
        scheduled: list[Sequence] = []
        num_tokens = 0
        while self.waiting:
            seq = self.waiting[0]
            # a request with n samples will fork n-1 children after its prefill
            width = seq.request.params.n if not seq.forked else 1
            if (self.running or scheduled) and len(self.running) + len(scheduled) + width > self.max_num_seqs:
                break
            plan = self.bm.plan(seq.token_ids, seq.request.salt)  # the prompt is hashed once
            if (self.running or scheduled) and \
                    num_tokens + len(seq) - plan.num_cached_tokens > self.max_num_batched_tokens:
                break
            if not self.bm.fits(plan):
                break
            num_cached = self.bm.allocate(seq.seq_id, seq.token_ids, seq.request.salt, plan=plan)
            seq.num_computed_tokens = num_cached
            if seq.is_parent and seq.num_preemptions == 0:
                seq.request.num_cached_tokens = num_cached
            num_tokens += len(seq) - num_cached
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            scheduled.append(seq)
        self.running.extend(scheduled)
        return ScheduleResult(scheduled, True, num_tokens=num_tokens)

    def _schedule_decode(self) -> ScheduleResult:
        scheduled: list[Sequence] = []
        cow: list[tuple[int, int]] = []
        preempted: list[Sequence] = []
        queue = list(self.running)
        while queue:
            seq = queue.pop(0)
            while not self.bm.can_append(seq.seq_id):
                if queue:
                    victim = queue.pop()  # the most recently admitted goes first
                    self._preempt(victim)
                    preempted.append(victim)
                else:
                    self._preempt(seq)
                    preempted.append(seq)
                    break
            else:
                cow.extend(self.bm.append_slot(seq.seq_id, len(seq)))
                scheduled.append(seq)
        self.running = list(scheduled)  # a copy: finishing mutates running, not the batch
        return ScheduleResult(scheduled, False, cow, preempted, num_tokens=len(scheduled))

    def _preempt(self, seq: Sequence) -> None:
        n_blocks = len(self.bm.block_table(seq.seq_id))
        self.bm.free(seq.seq_id)
        seq.status = SeqStatus.WAITING
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        if self.on_preempt is not None:
            self.on_preempt(seq)
        if self.sink is not None:
            self.sink.emit(Preempt(seq.request.request_id, seq.seq_id, n_blocks))

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self.bm.free(seq.seq_id)
        if seq in self.running:
            self.running.remove(seq)
