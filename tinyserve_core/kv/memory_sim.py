"""A memory-only serving loop over the BlockManager: continuous batching of requests
with lognormal prompt/output lengths, no model. It answers "how much of the KV memory
we hand out holds tokens" on a vLLM-like workload, fast enough for tests and
`tinyserve bench kv`.

Token ids carry no meaning here (the manager only hashes them); prompts in a shared
group start with the same system prefix so prefix caching has something to hit. Each
step admits waiting requests FCFS while blocks last, then decodes one token for every
running sequence, preempting the newest (recompute) when a slot cannot be had, as the
engine's scheduler does.

Alongside the manager's own waste figure, every step recomputes the waste from the
simulator's own request lengths (without shared prefixes, where each sequence owns
ceil(len / block_size) blocks), so the two accounts can be compared."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .block_manager import BlockManager


@dataclass
class MemorySimResult:
    steps: int
    requests: int
    preemptions: int
    mean_waste: float                   # manager's figure, averaged over busy steps
    # the same recomputed from request lengths alone; None with shared prefixes, where a
    # shared block counts once and lengths no longer determine the slots
    mean_waste_from_lengths: float | None
    max_waste_disagreement: float | None
    mean_reserved_waste: float          # static reservation of max_model_len per request
    peak_usage: float
    prefix_hit_rate: float
    waste_series: list[float] = field(default_factory=list, repr=False)


def lognormal_lengths(rng: np.random.Generator, n: int, mean: float, sigma: float,
                      lo: int, hi: int) -> np.ndarray:
    """Lengths with the given mean (before clipping) and log-std sigma."""
    mu = np.log(mean) - sigma ** 2 / 2
    return np.clip(np.round(rng.lognormal(mu, sigma, n)), lo, hi).astype(np.int64)


def run_memory_workload(num_requests: int = 400, block_size: int = 16, num_blocks: int = 4096,
                        max_num_seqs: int = 128, prompt_mean: float = 161.0,
                        output_mean: float = 338.0, sigma: float = 0.9,
                        max_model_len: int = 2048, shared_prefix_len: int = 0,
                        num_groups: int = 4, enable_prefix_caching: bool = True,
                        seed: int = 0, progress=None, sink=None, on_step=None) -> MemorySimResult:
    """Defaults follow the ShareGPT statistics of the vLLM paper (mean input 161,
    output 338 tokens). `sink` receives the manager's events; `on_step(step, bm, running)`
    is called after every step (the time-travel benchmark records the pool through it)."""
    rng = np.random.default_rng(seed)
    plen = lognormal_lengths(rng, num_requests, prompt_mean, sigma, 1, max_model_len // 2)
    olen = lognormal_lengths(rng, num_requests, output_mean, sigma, 1, max_model_len // 2)
    prefixes = [rng.integers(0, 32000, shared_prefix_len).tolist() for _ in range(num_groups)]
    prompts = []
    for i in range(num_requests):
        body = rng.integers(0, 32000, int(plen[i])).tolist()
        prompts.append((prefixes[i % num_groups] if shared_prefix_len else []) + body)

    bm = BlockManager(num_blocks, block_size, enable_prefix_caching, sink=sink)
    waiting = deque(range(num_requests))
    running: list[int] = []
    tokens: dict[int, list[int]] = {}
    remaining = {i: int(olen[i]) for i in range(num_requests)}
    steps = preemptions = 0
    waste, waste_len, reserved, peak = [], [], [], 0.0
    while waiting or running:
        steps += 1
        while waiting and len(running) < max_num_seqs:
            r = waiting[0]
            toks = tokens.get(r, prompts[r])
            if not bm.can_allocate(toks):
                break
            bm.allocate(r, toks)
            bm.cache_full_blocks(r, toks, len(toks))
            tokens[r] = toks
            running.append(r)
            waiting.popleft()
        if not running:
            raise RuntimeError(f"request {waiting[0]} can never fit in {num_blocks} blocks")
        decoded = []
        queue = deque(running)
        while queue:
            r = queue.popleft()
            while not bm.can_append(r) and queue:
                victim = queue.pop()
                bm.free(victim)
                waiting.appendleft(victim)
                preemptions += 1
            if not bm.can_append(r):
                bm.free(r)
                waiting.appendleft(r)
                preemptions += 1
                continue
            toks = tokens[r] = tokens[r] + [int(rng.integers(0, 32000))]
            bm.append_slot(r, len(toks))
            bm.cache_full_blocks(r, toks, len(toks) - 1)  # the newest token's KV is written next step
            decoded.append(r)
        running = decoded
        st = bm.stats()
        peak = max(peak, st.usage_perc)
        lens = np.array([len(tokens[r]) for r in running], np.int64)
        if len(lens):
            slots = -(-lens // block_size) * block_size
            waste.append(st.waste)
            waste_len.append(1.0 - lens.sum() / slots.sum())
            reserved.append(1.0 - lens.sum() / (len(lens) * max_model_len))
        done = []
        for r in running:
            remaining[r] -= 1
            if remaining[r] == 0:
                bm.free(r)
                done.append(r)
        if done:
            running = [r for r in running if remaining[r] > 0]
            if progress is not None:
                progress.update(len(done))
        if on_step is not None:
            on_step(steps, bm, running)
    st = bm.stats()
    w, wl = np.array(waste), np.array(waste_len)
    exact = not shared_prefix_len
    return MemorySimResult(steps, num_requests, preemptions, float(w.mean()),
                           float(wl.mean()) if exact else None,
                           float(np.abs(w - wl).max()) if exact else None,
                           float(np.mean(reserved)), peak, st.prefix_hit_rate, waste)
