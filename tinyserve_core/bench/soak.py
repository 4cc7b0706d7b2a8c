"""The engine soak: many short randomized episodes against a tiny random Llama, each with
its own page-selection policy, block size, small pool (so preemption happens), samples
per request (n up to 4, so fork and copy-on-write happen), requests that can never fit
(rejected with a reason) and live updates between steps. After every step the block
manager's full invariant check runs; at the end of an episode every request must have
finished (all its samples) or been rejected, and every block must be back in the free
pool (free or cached-free). `tinyserve soak` (cli/soak.py) runs it for minutes; the suite
runs it for seconds (tests/bench/test_soak.py).

The model is random and tiny on purpose: the soak tests the memory machinery and the
scheduler, which never look at what the model computes."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.sampling import SamplingParams
from ..errors import TinyServeError
from ..selection.registry import policy_names

VOCAB = 96
MAX_CONTEXT = 256
# An episode that needs more steps than this is stuck (its requests need at most a few
# hundred steps even when preempted over and over): reported as a failure, not a hang.
MAX_EPISODE_STEPS = 20_000
MAX_KEPT_FAILURES = 20   # messages kept; all are counted, and the run goes on to its end


@dataclass
class SoakReport:
    seconds: float = 0.0
    episodes: int = 0
    steps: int = 0
    requests: int = 0
    finished: int = 0
    rejected: int = 0
    sequences: int = 0
    preemptions: int = 0
    cow_copies: int = 0
    updates_requested: int = 0
    updates_applied: int = 0
    policies: set[str] = field(default_factory=set)
    block_sizes: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)   # the first MAX_KEPT_FAILURES
    failure_kinds: Counter = field(default_factory=Counter)   # kind -> how many

    @property
    def num_failures(self) -> int:
        return sum(self.failure_kinds.values())

    @property
    def ok(self) -> bool:
        return not self.num_failures

    def lines(self) -> list[str]:
        return [
            f"episodes            {self.episodes} in {self.seconds:.0f} s",
            f"steps               {self.steps}",
            f"requests            {self.requests} ({self.finished} finished, {self.rejected} rejected "
            f"with a reason, {self.sequences} sequences)",
            f"preemptions         {self.preemptions}",
            f"copy-on-write       {self.cow_copies} block copies",
            f"live updates        {self.updates_applied} settings applied of {self.updates_requested} asked for",
            f"policies            {', '.join(sorted(self.policies))}",
            f"block sizes         {', '.join(map(str, sorted(self.block_sizes)))}",
            "invariants          " + ("held after every step; no request lost, no block leaked" if self.ok
                                      else f"FAILED {self.num_failures} times ("
                                      + ", ".join(f"{k}: {v}" for k, v in self.failure_kinds.most_common())
                                      + f"); first: {self.failures[0]}"),
        ]


def tiny_model(seed: int = 0):
    """A 1-layer random Llama (CPU, float32) small enough for thousands of steps a minute."""
    from ..model.config import ModelConfig
    from ..model.llama import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_CONTEXT,
                      tie_word_embeddings=True, rms_norm_eps=1e-5)
    return LlamaForCausalLM(cfg).eval()


def _live_change(rng: random.Random) -> dict:
    """One random live setting (scheduler limits or page selection)."""
    key = rng.choice(("max_num_seqs", "max_num_batched_tokens", "policy", "budget", "sink_pages",
                      "recent_pages", "dense_layers", "tier_pages"))
    value = {"max_num_seqs": lambda: rng.randint(1, 8),
             "max_num_batched_tokens": lambda: rng.choice((16, 32, 64, 256)),
             "policy": lambda: rng.choice(policy_names()),
             "budget": lambda: rng.choice((0.25, 0.5, 8, 16, 64)),
             "sink_pages": lambda: rng.randint(0, 2),
             "recent_pages": lambda: rng.randint(0, 3),
             "dense_layers": lambda: rng.randint(0, 2),
             "tier_pages": lambda: rng.choice((0, 2, 4))}[key]()
    return {key: value}


class _Episode:
    def __init__(self, model, rng: random.Random, report: SoakReport, max_updates: int):
        self.rng, self.report, self.max_updates = rng, report, max_updates
        bs = rng.choice((1, 2, 4, 8, 16))
        cfg = EngineConfig.from_dict({
            "device": "cpu", "dtype": "float32", "block_size": bs,
            "num_blocks": rng.randint(80 // bs, 256 // bs),   # most requests fit, a few at once: preemption
            "enable_prefix_caching": rng.random() < 0.8,
            "max_num_seqs": rng.randint(1, 8), "max_num_batched_tokens": rng.choice((32, 64, 256)),
            "policy": rng.choice(policy_names()), "budget": rng.choice((0.5, 16, 64)),
            "seed": rng.randrange(1 << 30)})
        self.engine = Engine(cfg, model=model)
        self.n_of: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.wanted: dict = {}
        report.episodes += 1
        report.policies.add(cfg.selection.policy)
        report.block_sizes.add(bs)

    def add_requests(self) -> None:
        rng, eng = self.rng, self.engine
        prefix = [rng.randrange(VOCAB) for _ in range(rng.randint(0, 16))]  # shared: prefix-cache hits
        for _ in range(rng.randint(0, 4)):
            if rng.random() < 0.05:   # one that can never fit the pool or the context: rejected
                prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(MAX_CONTEXT, MAX_CONTEXT + 8))]
            else:
                prompt = prefix + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 16))]
            n = rng.randint(1, 4)
            params = SamplingParams(temperature=rng.choice((0.0, 0.8)), max_tokens=rng.randint(1, 32),
                                    n=n, ignore_eos=True)
            rid = eng.add_request(prompt, params)
            self.report.requests += 1
            if rid in eng.requests:
                self.n_of[rid] = n
            else:
                self.report.rejected += 1

    def live_update(self) -> None:
        for _ in range(self.rng.randint(1, self.max_updates)):
            change = _live_change(self.rng)
            try:
                self.engine.update(**change)
            except TinyServeError:
                continue   # refused with a named field (a value this pool cannot take)
            self.wanted.update(change)

    def step(self) -> None:
        eng = self.engine
        rec = eng.step()
        self.report.steps += 1
        for t in rec.finished:
            self.done[t.request_id] = self.done.get(t.request_id, 0) + 1
        if self.wanted:   # every update asked for since the last step is in force now
            # counted per setting: a key changed twice before a step is one setting to apply
            self.report.updates_requested += len(self.wanted)
            lost = {k: v for k, v in self.wanted.items() if eng.config.get(k) != v}
            self.report.updates_applied += len(self.wanted) - len(lost)
            if lost:
                self.fail("live update lost", f"asked {lost}, in force "
                          f"{ {k: eng.config.get(k) for k in lost} }")
            self.wanted = {}
        try:
            eng.block_manager.check_invariants()
        except AssertionError as e:
            self.fail("block manager invariant", str(e))

    def finish(self) -> None:
        eng, bm = self.engine, self.engine.block_manager
        self.report.preemptions += eng.scheduler.num_preemptions
        self.report.cow_copies += eng.num_cow_copies
        for rid, n in self.n_of.items():
            got = self.done.get(rid, 0)
            self.report.sequences += got
            if got == n:
                self.report.finished += 1
            else:
                self.fail("request lost", f"{rid} finished {got} of its {n} samples")
        if eng.requests:
            self.fail("request lost", f"{len(eng.requests)} requests still held by the engine")
        if bm.seq_ids() or bm.num_free_blocks != bm.num_blocks:
            self.fail("leaked blocks", f"{bm.num_blocks - bm.num_free_blocks} of {bm.num_blocks} not free, "
                      f"{len(bm.seq_ids())} sequences still hold blocks")

    def fail(self, kind: str, what: str) -> None:
        self.report.failure_kinds[kind] += 1
        if len(self.report.failures) < MAX_KEPT_FAILURES:
            self.report.failures.append(f"episode {self.report.episodes}, step {self.engine.step_count}: "
                                        f"{kind}: {what}")


def run_soak(seconds: float, seed: int = 0, max_updates: int = 2,
             progress: Callable[[float], None] | None = None) -> SoakReport:
    """Episodes until `seconds` have passed (the running episode is always drained, so the
    end checks see every request). progress(fraction) is called after every episode."""
    rng = random.Random(seed)
    model = tiny_model(seed)
    report = SoakReport()
    t0 = time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - t0 < seconds:
            ep = _Episode(model, rng, report, max_updates)
            arrivals = rng.randint(3, 12)   # request batches, one before some of the early steps
            for _ in range(MAX_EPISODE_STEPS):
                if arrivals and rng.random() < 0.5:
                    ep.add_requests()
                    arrivals -= 1
                if not ep.engine.has_unfinished():
                    if not arrivals:
                        break
                    continue
                if rng.random() < 0.3:   # at a step boundary: the step below applies them
                    ep.live_update()
                ep.step()
            else:
                ep.fail("stuck", f"not drained after {MAX_EPISODE_STEPS} steps")
            ep.finish()
            if progress:
                progress(min(1.0, (time.perf_counter() - t0) / seconds))
    report.seconds = time.perf_counter() - t0
    return report
