"""Typed engine events.

The block manager and the scheduler emit these into an `EventSink`;
the engine gathers one step's events into its StepRecord, which observers (GUI
snapshot, trace writer, CSV) read. Events are small frozen dataclasses so that a
step with thousands of them stays cheap, and `kind` is a class constant so that
consumers can switch on it without isinstance chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True)
class Alloc(Event):
    """Fresh physical blocks given to a sequence (not prefix hits)."""
    kind: ClassVar[str] = "alloc"
    seq_id: int
    block_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Free(Event):
    """A sequence dropped its references to these blocks (in reverse order).
    `released` are the ones whose refcount reached zero."""
    kind: ClassVar[str] = "free"
    seq_id: int
    block_ids: tuple[int, ...]
    released: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Fork(Event):
    """child now shares every block of parent (refcount + 1, no copy)."""
    kind: ClassVar[str] = "fork"
    parent_seq_id: int
    child_seq_id: int
    block_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CowCopy(Event):
    """Copy-on-write: seq_id appended into a shared block `src`; it got `dst`."""
    kind: ClassVar[str] = "cow_copy"
    seq_id: int
    src: int
    dst: int


@dataclass(frozen=True, slots=True)
class PrefixHit(Event):
    """A new request reused cached blocks for its first `num_tokens` prompt tokens."""
    kind: ClassVar[str] = "prefix_hit"
    seq_id: int
    block_ids: tuple[int, ...]
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Evict(Event):
    """A cached-but-free block lost its hash because an allocation popped it."""
    kind: ClassVar[str] = "evict"
    block_id: int
    block_hash: int


@dataclass(frozen=True, slots=True)
class Cache(Event):
    """Full blocks newly registered in the prefix cache, as one chain: block_hashes[0]'s
    parent is `parent_hash` (None for a sequence's first block), each next hash's parent
    the one before. What a KV-event publisher reports as BlockStored."""
    kind: ClassVar[str] = "cache"
    seq_id: int
    block_ids: tuple[int, ...]
    block_hashes: tuple[int, ...]
    parent_hash: int | None
    token_ids: tuple[int, ...]            # block_size per block


@dataclass(frozen=True, slots=True)
class Preempt(Event):
    """A running request lost its blocks and goes back to waiting (recompute)."""
    kind: ClassVar[str] = "preempt"
    request_id: str
    seq_id: int
    num_blocks_freed: int


@dataclass(frozen=True, slots=True)
class Schedule(Event):
    """The batch of one step: prefill or decode, which sequences, how many tokens."""
    kind: ClassVar[str] = "schedule"
    phase: str  # "prefill" | "decode"
    seq_ids: tuple[int, ...]
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Arrive(Event):
    kind: ClassVar[str] = "arrive"
    request_id: str
    prompt_len: int


@dataclass(frozen=True, slots=True)
class Reject(Event):
    """A request that can never fit; the engine goes on without it."""
    kind: ClassVar[str] = "reject"
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Finish(Event):
    kind: ClassVar[str] = "finish"
    request_id: str
    seq_id: int
    reason: str  # "length" | "stop"
    num_output_tokens: int


class EventSink:
    """Collects events; the engine drains it once per step.

    `enabled=False` makes emit a no-op so benchmarks pay nothing for observability."""

    __slots__ = ("events", "enabled")

    def __init__(self, enabled: bool = True):
        self.events: list[Event] = []
        self.enabled = enabled

    def emit(self, event: Event) -> None:
        if self.enabled:
            self.events.append(event)

    def drain(self) -> list[Event]:
        out, self.events = self.events, []
        return out


EVENT_KINDS: tuple[str, ...] = tuple(
    c.kind for c in (Alloc, Free, Fork, CowCopy, PrefixHit, Evict, Cache, Preempt, Schedule,
                     Arrive, Reject, Finish)
)
