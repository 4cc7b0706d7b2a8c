"""The numbers a run is judged by, from its StepRecords: what `tinyserve simulate`
prints at the end and writes with `--summary-json`.

Definitions (vLLM's benchmark_serving where they overlap):
* tokens/s are over the run's span on the engine clock (first step start to last step
  end, idle gaps included): the throughput the workload actually got. Prompt tokens
  are those computed, so prefix-cache hits do not count and recomputation after a
  preemption does.
* TTFT = first token - arrival, one value per request (the earliest of its `n`
  sequences); TPOT = (finish - first token) / (output tokens - 1), one value per
  sequence with at least two output tokens. Percentiles interpolate linearly
  (numpy's default, as vLLM does).
* rejected requests are listed with their reasons and counted by the reason's kind
  (the engine's reasons read `<kind>: <numbers>`, e.g. `pool too small: needs ...`).
* peak KV usage = max of kv_cache_usage_perc; mean waste = mean memory_waste over the
  steps that held any blocks; prefix-hit rate = cached tokens / queried tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .events import Evict, Reject
from .record import StepRecord


@dataclass
class ServingSummary:
    num_steps: int = 0
    duration_s: float = 0.0
    busy_s: float = 0.0                     # time in prefill/decode steps
    host_ms_per_step: float | None = None   # mean of (step wall - device span) over busy steps
    device_busy_frac: float | None = None   # summed device spans / duration, 0..1
    requests_finished: int = 0
    sequences_finished: int = 0
    requests_rejected: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prompt_tokens_per_s: float = 0.0
    generation_tokens_per_s: float = 0.0
    total_tokens_per_s: float = 0.0
    ttft_mean_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_mean_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p99_ms: float | None = None
    peak_kv_usage: float = 0.0              # 0..1
    mean_memory_waste: float | None = None  # 0..1
    prefix_hit_rate: float | None = None    # 0..1, None without queries
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    num_preemptions: int = 0
    num_cow_copies: int = 0
    num_evictions: int = 0                  # cached-free blocks whose hash was dropped
    rejections: dict[str, int] = field(default_factory=dict)   # kind of reason -> requests
    rejected: list[dict[str, str]] = field(default_factory=list)  # {request_id, reason}, in order
    partial: bool = False                   # the run was interrupted: figures cover the steps run


def _stats_ms(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    arr = np.asarray(values, dtype=np.float64) * 1e3
    p50, p99 = np.percentile(arr, [50, 99])
    return float(arr.mean()), float(p50), float(p99)


def summarize(records: Iterable[StepRecord]) -> ServingSummary:
    records = list(records)
    s = ServingSummary(num_steps=len(records))
    if not records:
        return s
    s.duration_s = max(r.t_end for r in records) - min(r.t_start for r in records)
    busy = [r for r in records if r.phase != "idle"]
    s.busy_s = sum(r.t_end - r.t_start for r in busy)
    if busy:
        s.host_ms_per_step = 1e3 * float(np.mean([r.metrics.host_time_s for r in busy]))
    if s.duration_s > 0:
        s.device_busy_frac = min(1.0, sum(r.metrics.device_time_s for r in busy) / s.duration_s)

    first_token: dict[str, float] = {}
    arrival: dict[str, float] = {}
    tpots: list[float] = []
    wastes: list[float] = []
    for r in records:
        m = r.metrics
        s.prompt_tokens += m.num_prompt_tokens
        s.generation_tokens += m.num_generation_tokens
        s.peak_kv_usage = max(s.peak_kv_usage, m.kv_cache_usage_perc)
        if m.kv_cache_usage_perc > 0:
            wastes.append(m.memory_waste)
        s.prefix_cache_queries = max(s.prefix_cache_queries, m.prefix_cache_queries)
        s.prefix_cache_hits = max(s.prefix_cache_hits, m.prefix_cache_hits)
        s.num_preemptions = max(s.num_preemptions, m.num_preemptions)
        s.num_cow_copies = max(s.num_cow_copies, m.num_cow_copies)
        s.num_evictions += sum(isinstance(e, Evict) for e in r.events)
        for e in r.events:
            if isinstance(e, Reject):
                s.requests_rejected += 1
                s.rejected.append({"request_id": e.request_id, "reason": e.reason})
                kind = e.reason.split(":", 1)[0]
                s.rejections[kind] = s.rejections.get(kind, 0) + 1
        for t in r.finished:
            s.sequences_finished += 1
            arrival[t.request_id] = t.arrival_s
            if t.first_token_s is not None:
                prev = first_token.get(t.request_id)
                first_token[t.request_id] = t.first_token_s if prev is None else min(prev, t.first_token_s)
            if t.tpot_s is not None:
                tpots.append(t.tpot_s)
    s.requests_finished = len(arrival)
    if s.duration_s > 0:
        s.prompt_tokens_per_s = s.prompt_tokens / s.duration_s
        s.generation_tokens_per_s = s.generation_tokens / s.duration_s
        s.total_tokens_per_s = (s.prompt_tokens + s.generation_tokens) / s.duration_s
    s.ttft_mean_ms, s.ttft_p50_ms, s.ttft_p99_ms = _stats_ms(
        [first_token[rid] - arrival[rid] for rid in first_token])
    s.tpot_mean_ms, s.tpot_p50_ms, s.tpot_p99_ms = _stats_ms(tpots)
    if wastes:
        s.mean_memory_waste = float(np.mean(wastes))
    if s.prefix_cache_queries:
        s.prefix_hit_rate = s.prefix_cache_hits / s.prefix_cache_queries
    return s


def summary_to_json(summary: ServingSummary) -> dict[str, Any]:
    """The summary as a JSON-ready object (`json.dumps` it; None stays null)."""
    return dataclasses.asdict(summary)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def format_summary_table(summary: ServingSummary, title: str = "Serving summary") -> str:
    s = summary
    rows = [
        ("requests finished", f"{s.requests_finished}", f"{s.sequences_finished} sequences, {s.requests_rejected} rejected"),
        ("steps", f"{s.num_steps}", f"busy {s.busy_s:.3f} s of {s.duration_s:.3f} s"),
        ("host ms / step", _fmt(s.host_ms_per_step, ".3f"),
         f"step wall minus device time; device busy {_fmt(s.device_busy_frac, '.1f', 100)}%"),
        ("prompt tokens/s", f"{s.prompt_tokens_per_s:.1f}", f"{s.prompt_tokens} computed"),
        ("generation tokens/s", f"{s.generation_tokens_per_s:.1f}", f"{s.generation_tokens} generated"),
        ("total tokens/s", f"{s.total_tokens_per_s:.1f}", ""),
        ("TTFT p50 / p99", f"{_fmt(s.ttft_p50_ms, '.1f')} / {_fmt(s.ttft_p99_ms, '.1f')}", f"ms (mean {_fmt(s.ttft_mean_ms, '.1f')})"),
        ("TPOT p50 / p99", f"{_fmt(s.tpot_p50_ms, '.2f')} / {_fmt(s.tpot_p99_ms, '.2f')}", f"ms (mean {_fmt(s.tpot_mean_ms, '.2f')})"),
        ("peak KV usage", _fmt(s.peak_kv_usage, ".1f", 100), "%"),
        ("mean memory waste", _fmt(s.mean_memory_waste, ".2f", 100), "% of allocated slots"),
        ("prefix-cache hit rate", _fmt(s.prefix_hit_rate, ".1f", 100), f"% ({s.prefix_cache_hits} of {s.prefix_cache_queries} tokens)"),
        ("preemptions", f"{s.num_preemptions}", ""),
        ("copy-on-write copies", f"{s.num_cow_copies}", ""),
        ("evictions", f"{s.num_evictions}", "cached-free blocks reused"),
    ]
    for kind, count in sorted(s.rejections.items()):
        example = next(x for x in s.rejected if x["reason"].split(":", 1)[0] == kind)
        rows.append((f"rejected: {kind}", f"{count}", f"e.g. {example['request_id']}: {example['reason']}"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{label:<{w0}}  {value:>{w1}}  {note}".rstrip() for label, value, note in rows]
    if s.partial:
        lines.append(f"{'partial':<{w0}}  {'yes':>{w1}}  interrupted: only the {s.num_steps} steps run so far")
    width = max(len(title), *(len(line) for line in lines))
    return "\n".join([title, "-" * width, *lines])
