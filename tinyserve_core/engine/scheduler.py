"""Continuous-batching scheduler: FCFS admission, prefill steps before decode steps
(as nano-vllm), preemption by recompute when the block pool runs dry.

The scheduler owns the sequences and their blocks: it admits, preempts and finishes
them, forks the n-1 siblings of a sampled request after its prefill and registers the
full blocks of every step with the prefix cache (`postprocess`). The engine only runs
the model and samples; what changed comes back in the results (preempted sequences in
`ScheduleResult`, finished requests in `PostprocessResult`), never by a callback.

Every step is either a prefill batch (new or preempted sequences, up to the token
budget) or a decode batch (one token for every running sequence). When a running
sequence cannot get a slot, the most recently admitted running sequence is preempted:
its blocks are freed and it goes to the front of the waiting queue, to be recomputed
later (with prefix caching its full blocks are often still there)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


from ..kv.block_manager import BlockManager
from ..observe.events import EventSink, Finish, Preempt
from .request import Request, Sequence, SeqStatus


@dataclass
class ScheduleResult:
    seqs: list[Sequence]
    is_prefill: bool
    cow_pairs: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    num_tokens: int = 0

    @property
    def to_fork(self) -> list[int]:
        """Rows of `seqs` whose request forks its siblings after this (first) prefill."""
        if not self.is_prefill:
            return []
        return [i for i, s in enumerate(self.seqs) if not s.forked]


@dataclass(frozen=True)
class ChildStart:
    """A forked sibling's first token, sampled from its parent's prefill logits with the
    sibling's own stream (the request seed and this sample index, which it keeps)."""
    token: int
    sample_index: int


@dataclass
class PostprocessResult:
    num_generated: int = 0                                   # tokens appended, forks included
    finished: list[Request] = field(default_factory=list)   # requests done this step


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int,
                 max_num_batched_tokens: int, sink: EventSink | None = None, *,
                 max_model_len: int, eos_token_id: int | None = None):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.sink = sink
        self.max_model_len = max_model_len
        self.eos_token_id = eos_token_id
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- schedule --------------------------------------------------------------------
    def schedule(self, now: float = 0.0) -> ScheduleResult:
        result = self._schedule_prefill(now)
        if result.seqs:
            return result
        return self._schedule_decode()

    def _schedule_prefill(self, now: float) -> ScheduleResult:
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
            if seq.request.first_scheduled_s is None:
                seq.request.first_scheduled_s = now
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
        queue = deque(self.running)
        append = self.bm.try_append_slot
        while queue:
            seq = queue.popleft()
            while (pairs := append(seq.seq_id, len(seq.token_ids))) is None:
                if queue:
                    victim = queue.pop()  # the most recently admitted goes first
                    self._preempt(victim)
                    preempted.append(victim)
                else:
                    self._preempt(seq)
                    preempted.append(seq)
                    break
            else:
                if pairs:
                    cow.extend(pairs)
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
        if self.sink is not None:
            self.sink.emit(Preempt(seq.request.request_id, seq.seq_id, n_blocks))

    # -- after the forward -------------------------------------------------------------
    def postprocess(self, batch: ScheduleResult, tokens: list[int],
                    children: dict[int, list[ChildStart]], now: float) -> PostprocessResult:
        """Append each sequence's sampled token; fork the siblings of a first prefill
        (`children`: row of `batch.seqs` -> its siblings' first tokens, in order); register
        the blocks that became full and computed; finish what stops. Called once per
        step after the model wrote the KV of every scheduled token."""
        out = PostprocessResult()
        cache_full = self.bm.cache_full_blocks
        for i, (seq, token) in enumerate(zip(batch.seqs, tokens)):
            req = seq.request
            seq.num_computed_tokens = len(seq.token_ids)
            new_seqs = (seq,) if not children or i not in children else [seq, *self._fork(seq, children[i])]
            seq.token_ids.append(token)
            for s in new_seqs:
                cache_full(s.seq_id, s.token_ids, s.num_computed_tokens)
                out.num_generated += 1
                if req.first_token_s is None:
                    req.first_token_s = now
                reason = self._stop_reason(s)
                if reason is not None:
                    s.finish_s = now
                    self._finish(s, reason)
                    if req.finished:
                        req.finish_s = now
                        out.finished.append(req)
        return out

    def _fork(self, parent: Sequence, starts: list[ChildStart]) -> list[Sequence]:
        """n parallel samples: children share every prompt block of the parent."""
        req = parent.request
        parent.forked = True
        children = []
        for start in starts:
            child = Sequence(req, parent.token_ids + [start.token], parent.seed, start.sample_index,
                             is_parent=False)
            child.num_computed_tokens = parent.num_computed_tokens
            child.status = SeqStatus.RUNNING
            self.bm.fork(parent.seq_id, child.seq_id)
            req.seqs.append(child)
            self.running.append(child)
            children.append(child)
        return children

    def _stop_reason(self, seq: Sequence) -> str | None:
        p = seq.request.params
        last = seq.token_ids[-1]
        if not p.ignore_eos and self.eos_token_id is not None and last == self.eos_token_id:
            return "stop"
        if last in p.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            return "length"
        return None

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self.bm.free(seq.seq_id)
        if seq in self.running:
            self.running.remove(seq)
        if self.sink is not None:
            self.sink.emit(Finish(seq.request.request_id, seq.seq_id, reason, seq.num_output_tokens))
