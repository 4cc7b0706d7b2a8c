"""The first run's memory story: the workload a first start runs, and the beats of the
"what you are seeing" caption, each named the first time it happens. Qt-free, so the
story is tested by running the engine headless with this very config.

The workload is sized for a 2-core CPU machine: 32 sequences (16 requests of n = 2
samples) with prompts of about 128 tokens and outputs of 128 to 384 want about twice the
192 blocks of the pool, so the pool fills within a few dozen steps, decode growth then
runs out of blocks (preemption), and the cached prompt blocks that preempted and
finished requests leave behind are reused for new ones (eviction). Three in five
prompts start with one of four shared prefixes (prefix hits), and every request forks
its second sample after the prefill (copy-on-write when both write into the shared
last block)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIRST_RUN = {"num_blocks": 192, "block_size": 16, "requests": 400, "rate": 4.0, "n": 2,
             "shared_prefix_frac": 0.6, "prompt_len": 128, "prompt_len_max": 512,
             "output_len": 128, "output_len_max": 384, "policy": "quest", "budget": 128,
             "stats": True, "max_num_seqs": 32}

POOL_FULL = 0.7     # KV usage at which the caption says the pool is filling up

# beat -> (title, what it means); {placeholders} are filled from the first occurrence
BEATS = {
    "fork": ("Fork", "request {request} asked for {n} samples: they share every prompt block "
             "(refcount {n}), nothing is copied."),
    "prefix_hit": ("Prefix hit", "{who} starts with a cached prompt prefix: {blocks} blocks "
                   "({tokens} tokens) were reused, not recomputed."),
    "cow_copy": ("Copy-on-write", "a sample wrote into a shared, partly filled block, so it got "
                 "its own copy (block {src} -> {dst}); the arrow in the pool shows it."),
    "pool_full": ("Pool filling up", "{percent:.0f}% of the blocks are in use: new requests now "
                  "wait for blocks."),
    "evict": ("Eviction", "free block {block} still held a cached prefix; it was reused for new "
              "tokens and its hash forgotten."),
    "preempt": ("Preemption", "no free block for the next token: request {request} gave back "
                "{blocks} blocks and will be recomputed."),
}


@dataclass(frozen=True)
class Beat:
    kind: str
    step: int
    title: str
    text: str


class StoryTracker:
    """Feeds on steps; returns each beat once, at the step it first happens."""

    def __init__(self):
        self.seen: dict[str, Beat] = {}

    @property
    def complete(self) -> bool:
        return len(self.seen) == len(BEATS)

    def feed(self, step: int, events: Iterable, usage: float,
             requests: dict[int, str] | None = None) -> list[Beat]:
        requests = requests or {}
        new: list[Beat] = []

        def beat(kind: str, **fields) -> None:
            if kind in self.seen:
                return
            title, text = BEATS[kind]
            b = Beat(kind, step, title, text.format(**fields))
            self.seen[kind] = b
            new.append(b)

        forks: dict[int, int] = {}
        for e in events:
            match e.kind:
                case "fork":
                    forks[e.parent_seq_id] = forks.get(e.parent_seq_id, 1) + 1
                case "prefix_hit":
                    r = requests.get(e.seq_id)
                    beat("prefix_hit", who=f"request {r}" if r else f"seq {e.seq_id}",
                         blocks=len(e.block_ids), tokens=e.num_tokens)
                case "cow_copy":
                    beat("cow_copy", src=e.src, dst=e.dst)
                case "evict":
                    beat("evict", block=e.block_id)
                case "preempt":
                    beat("preempt", request=e.request_id, blocks=e.num_blocks_freed)
        for parent, n in forks.items():
            beat("fork", request=requests.get(parent, f"of seq {parent}"), n=n)
        if usage >= POOL_FULL:
            beat("pool_full", percent=100 * usage)
        return new
