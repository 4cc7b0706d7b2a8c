"""Synthetic engine runs: StepRecords as a simple FCFS engine would report them, built
without a model so exporter tests take milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

from tinyserve_core.observe.events import Arrive, Finish, Preempt, Schedule
from tinyserve_core.observe.record import RequestTiming, StepMetrics, StepRecord


@dataclass
class Req:
    rid: str
    seq: int
    arrival: float
    prompt_len: int
    out_len: int
    first_sched: float | None = None
    first_tok: float | None = None
    generated: int = 0


def synthetic_run(requests: list[tuple[float, int, int]], step_s: float = 0.01,
                  capacity_tokens: int = 4096, preempt_at_step: int | None = None,
                  arrive_step_noise: float = 0.0) -> list[StepRecord]:
    """requests: (arrival_s, prompt_len, out_len). Prefill steps take all arrived
    waiting requests; otherwise one decode step for every running one. Between
    arrivals with nothing to do, one "idle" record spans the gap."""
    pending = [Req(f"r{i}", i, a, p, o) for i, (a, p, o) in enumerate(requests)]
    pending.sort(key=lambda r: r.arrival)
    waiting: list[Req] = []
    running: list[Req] = []
    records: list[StepRecord] = []
    clock = 0.0
    cum = dict(pre=0, q=0, h=0, cow=0)
    step = 0
    while pending or waiting or running:
        events = []
        while pending and pending[0].arrival <= clock + 1e-12:
            r = pending.pop(0)
            waiting.append(r)
            events.append(Arrive(r.rid, r.prompt_len))
        if not waiting and not running:
            nxt = pending[0].arrival
            records.append(StepRecord(step, clock, nxt, "idle", (), events, StepMetrics()))
            step += 1
            clock = nxt
            continue
        t0, t1 = clock, clock + step_s
        finished = []
        m = StepMetrics()
        if waiting:
            batch = waiting
            waiting = []
            for r in batch:
                if r.first_sched is None:
                    r.first_sched = t0
                r.first_tok = r.first_tok if r.first_tok is not None else t1
                r.generated = max(r.generated, 1)
                cum["q"] += r.prompt_len
                cum["h"] += r.prompt_len // 4
            m.num_prompt_tokens = sum(r.prompt_len for r in batch)
            m.num_generation_tokens = len(batch)
            running.extend(batch)
            phase, seqs = "prefill", tuple(r.seq for r in batch)
        else:
            for r in running:
                r.generated += 1
            m.num_generation_tokens = len(running)
            cum["cow"] += 1
            phase, seqs = "decode", tuple(r.seq for r in running)
        events.append(Schedule(phase, seqs, m.num_prompt_tokens + m.num_generation_tokens))
        if preempt_at_step == step and running:
            victim = running.pop()
            waiting.append(victim)
            cum["pre"] += 1
            events.append(Preempt(victim.rid, victim.seq, 3))
        for r in [r for r in running if r.generated >= r.out_len]:
            running.remove(r)
            events.append(Finish(r.rid, r.seq, "length", r.generated))
            finished.append(RequestTiming(r.rid, r.seq, r.arrival, r.first_sched, r.first_tok, t1,
                                          r.prompt_len, r.generated, finish_reason="length"))
        used = sum(r.prompt_len + r.generated for r in running)
        m.kv_cache_usage_perc = min(1.0, used / capacity_tokens)
        m.memory_waste = 0.05 if used else 0.0
        m.num_requests_running = len(running)
        m.num_requests_waiting = len(waiting) + len(pending)
        m.num_preemptions, m.prefix_cache_queries, m.prefix_cache_hits, m.num_cow_copies = \
            cum["pre"], cum["q"], cum["h"], cum["cow"]
        m.step_time_s = step_s
        m.tokens_per_s = (m.num_prompt_tokens + m.num_generation_tokens) / step_s
        m.gen_tokens_per_s = m.num_generation_tokens / step_s
        # float noise like a real clock: this step's end a hair past the next start
        records.append(StepRecord(step, t0, t1 + arrive_step_noise, phase, seqs, events, m, finished,
                                  {"attention": step_s * 0.6, "mlp": step_s * 0.3}))
        step += 1
        clock = t1
    return records
