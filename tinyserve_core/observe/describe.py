"""Engine events in words, for the event log: one `LogEntry` per thing a person would
call one event ("request req-12 forked into 2 samples sharing 5 blocks"), carrying the
blocks, sequence and request it names so a view can select them.

Forks are the one grouping: the engine emits a Fork per child, the log says it once per
parent. Sequence ids are named by their request when the caller knows it (`requests`,
seq id -> request id)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import events as ev

# the kinds the log shows, in the order its filter lists them
LOG_KINDS = ("arrive", "prefix_hit", "alloc", "fork", "cow_copy", "evict", "preempt", "free",
             "finish", "reject")


@dataclass(frozen=True, slots=True)
class LogEntry:
    step: int
    kind: str
    text: str
    blocks: tuple[int, ...] = ()
    seq_id: int | None = None
    request_id: str | None = None


def _ids(blocks: tuple[int, ...], most: int = 6) -> str:
    head = ", ".join(map(str, blocks[:most]))
    return head + (f", ... (+{len(blocks) - most})" if len(blocks) > most else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def short_hash(h: int) -> str:
    return f"{h & (2 ** 64 - 1):016x}"[:8] + "..."


def describe(step: int, events: Iterable[ev.Event],
             requests: Mapping[int, str] | None = None) -> list[LogEntry]:
    requests = requests or {}
    out: list[LogEntry] = []
    forks: dict[int, list[ev.Fork]] = {}

    def who(seq: int) -> str:
        r = requests.get(seq)
        return f"seq {seq} ({r})" if r else f"seq {seq}"

    for e in events:
        match e:
            case ev.Fork():
                if e.parent_seq_id not in forks:
                    forks[e.parent_seq_id] = []
                    out.append(None)          # placeholder: the group is written below
                    forks[e.parent_seq_id].append(len(out) - 1)  # type: ignore[arg-type]
                forks[e.parent_seq_id].append(e)
            case ev.Alloc():
                out.append(LogEntry(step, e.kind, f"{who(e.seq_id)} got "
                                    f"{_plural(len(e.block_ids), 'new block')}: {_ids(e.block_ids)}",
                                    e.block_ids, e.seq_id, requests.get(e.seq_id)))
            case ev.Free():
                kept = len(e.block_ids) - len(e.released)
                tail = f", {kept} still shared or cached" if kept else ""
                out.append(LogEntry(step, e.kind, f"{who(e.seq_id)} released "
                                    f"{_plural(len(e.released), 'block')}{tail}",
                                    e.released or e.block_ids, e.seq_id, requests.get(e.seq_id)))
            case ev.CowCopy():
                out.append(LogEntry(step, e.kind, f"copy-on-write block {e.src} -> {e.dst} "
                                    f"({who(e.seq_id)} wrote into a shared block)",
                                    (e.src, e.dst), e.seq_id, requests.get(e.seq_id)))
            case ev.PrefixHit():
                out.append(LogEntry(step, e.kind, f"prefix hit: {who(e.seq_id)} reused "
                                    f"{_plural(len(e.block_ids), 'cached block')} "
                                    f"({e.num_tokens} prompt tokens not recomputed)",
                                    e.block_ids, e.seq_id, requests.get(e.seq_id)))
            case ev.Evict():
                out.append(LogEntry(step, e.kind, f"evicted cached block {e.block_id} "
                                    f"(hash {short_hash(e.block_hash)})", (e.block_id,)))
            case ev.Preempt():
                out.append(LogEntry(step, e.kind, f"preempted request {e.request_id} "
                                    f"(seq {e.seq_id}): no free block, "
                                    f"{_plural(e.num_blocks_freed, 'block')} freed, "
                                    f"it will be recomputed", (), e.seq_id, e.request_id))
            case ev.Arrive():
                out.append(LogEntry(step, e.kind, f"request {e.request_id} arrived "
                                    f"({e.prompt_len} prompt tokens)", request_id=e.request_id))
            case ev.Reject():
                out.append(LogEntry(step, e.kind, f"rejected request {e.request_id}: {e.reason}",
                                    request_id=e.request_id))
            case ev.Finish():
                out.append(LogEntry(step, e.kind, f"request {e.request_id} (seq {e.seq_id}) "
                                    f"finished: {e.reason}, {e.num_output_tokens} tokens",
                                    (), e.seq_id, e.request_id))
    for parent, (slot, *children) in forks.items():
        blocks = children[0].block_ids
        req = requests.get(parent)
        name = f"request {req}" if req else f"seq {parent}"
        out[slot] = LogEntry(step, "fork", f"{name} forked into {len(children) + 1} samples "
                             f"sharing {_plural(len(blocks), 'block')} "
                             f"(seqs {', '.join(str(c.child_seq_id) for c in children)})",
                             blocks, parent, req)
    return [x for x in out if x is not None]
