"""Requests and the sequences that carry them through the engine.

A request with n parallel samples starts as one sequence; after its prompt is
prefilled, n-1 children fork from it and share its blocks (copy-on-write on the
first append into the shared last block). From then on each sequence is scheduled,
preempted and finished on its own; the request is done when all are."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field


from .sampling import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_s: float
    salt: str | None = None           # isolates this request's prefix-cache entries
    seqs: list["Sequence"] = field(default_factory=list)
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    num_cached_tokens: int = 0         # prompt tokens served by the prefix cache

    @property
    def finished(self) -> bool:
        return bool(self.seqs) and len(self.seqs) == self.params.n and all(
            s.status is SeqStatus.FINISHED for s in self.seqs)


class Sequence:
    _ids = itertools.count()

    __slots__ = ("seq_id", "request", "token_ids", "num_prompt_tokens", "num_computed_tokens",
                 "status", "finish_reason", "finish_s", "seed", "sample_index", "num_preemptions", "is_parent",
                 "forked")

    def __init__(self, request: Request, token_ids: list[int], seed: int | None,
                 sample_index: int = 0, is_parent: bool = True):
        self.seq_id = next(Sequence._ids)
        self.request = request
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(request.prompt_token_ids)
        self.num_computed_tokens = 0     # tokens whose KV is in the cache
        self.status = SeqStatus.WAITING
        self.finish_reason: str | None = None
        self.finish_s: float | None = None
        self.seed = seed                 # sampling stream: None = greedy
        self.sample_index = sample_index # which of the request's n samples (0 = parent)
        self.num_preemptions = 0
        self.is_parent = is_parent       # forks its siblings after the first prefill
        self.forked = not is_parent or request.params.n == 1

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, req={self.request.request_id}, len={len(self)}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")
