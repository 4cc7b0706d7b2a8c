"""Chrome Trace Event JSON of an engine run, for Perfetto UI and chrome://tracing.

Layout (one process, "TinyServe engine"):

* thread "engine steps": one complete event ("X") per prefill/decode step, with the
  step number (`args.step`, the step the GUI's timeline shows) and the step's token counts, kernel
  times, event counts and page-selection records (`selection_records`) in `args`; preemptions and
  rejections as instant events ("i") on the same thread, with their `step`;
* one async track per request sequence (cat "request", "b"/"e" with a numeric id): an
  outer "request <id>" slice from arrival to finish with "queued", "prefill" and
  "decode" nested inside it. Perfetto names the track after the first (outer) slice of
  an id and nests the rest under it; requests still running when the trace is saved
  get a single slice to the end of the trace, marked `unfinished`;
* counters ("C"): KV usage, running/waiting requests, tokens/s, prefix-cache hit rate,
  memory waste, block states, cumulative preemptions and copy-on-write copies.

Timestamps are engine-clock microseconds (floats rounded to nanoseconds). Every event
track is written in non-decreasing time order, which `validate_trace` checks along with
the per-phase required keys, b/e pairing and X nesting.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..writers import write_text
from .events import Arrive, Preempt, Reject
from .record import RequestTiming, StepRecord

PID = 1
ENGINE_TID = 1
REQUESTS_TID = 2


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


class TraceWriter:
    """Builds the trace one StepRecord at a time, so a running session can be saved
    at any moment (the GUI's "export trace" while the engine runs). The engine host
    calls `add` and `save` on the engine's own loop, between steps: no lock."""

    def __init__(self, process_name: str = "TinyServe engine", metadata: dict[str, Any] | None = None):
        self._process_name = process_name
        self._metadata = dict(metadata or {})
        self._events: list[dict[str, Any]] = []
        self._open: dict[str, float] = {}          # request_id -> first-seen ts (us)
        self._async_ids: dict[tuple[str, int], int] = {}
        self._last_end_us = 0.0                    # end of the last engine-thread slice
        self._last_ts_us = 0.0
        self.num_steps = 0

    # -- feeding ------------------------------------------------------------------
    def add(self, record: StepRecord) -> None:
        self._add(record)

    def extend(self, records: Iterable[StepRecord]) -> None:
        for r in records:
            self._add(r)

    def _add(self, rec: StepRecord) -> None:
        self.num_steps += 1
        # the engine thread's slices must not overlap: absorb float noise at step edges
        start = max(_us(rec.t_start), self._last_end_us)
        end = max(_us(rec.t_end), start)
        for ev in rec.events:
            if isinstance(ev, Arrive):
                self._open.setdefault(ev.request_id, start)
        out: list[dict[str, Any]] = []
        if rec.phase != "idle":
            out.append(self._step_event(rec, start, end))
        self._last_end_us = end
        self._last_ts_us = max(self._last_ts_us, end)
        for ev in rec.events:
            if isinstance(ev, Preempt):
                out.append(_instant(f"preempt {ev.request_id}", end, {
                    "step": rec.step, "request_id": ev.request_id, "seq_id": ev.seq_id,
                    "num_blocks_freed": ev.num_blocks_freed}))
            elif isinstance(ev, Reject):
                self._open.pop(ev.request_id, None)
                out.append(_instant(f"reject {ev.request_id}", end, {
                    "step": rec.step, "request_id": ev.request_id, "reason": ev.reason}))
        out.extend(_counters(rec, end))
        for timing in rec.finished:
            self._open.pop(timing.request_id, None)
            out.extend(self._request_slices(timing, end, rec.step))
        self._emit(out)

    def _emit(self, events: list[dict[str, Any]]) -> None:
        """One step's events, in an order valid per track (what validate_trace checks)."""
        self._events.extend(events)

    def _step_event(self, rec: StepRecord, start: float, end: float) -> dict[str, Any]:
        m = rec.metrics
        args: dict[str, Any] = {
            "step": rec.step, "num_seqs": len(rec.seq_ids),
            "num_prompt_tokens": m.num_prompt_tokens,
            "num_generation_tokens": m.num_generation_tokens,
            "num_finished": len(rec.finished),
        }
        if rec.op_timings_s:
            args["op_ms"] = {k: round(v * 1e3, 4) for k, v in sorted(rec.op_timings_s.items())}
        if rec.events:
            args["events"] = dict(sorted(Counter(e.kind for e in rec.events).items()))
        if rec.selection:   # (sequence, layer, kv-head) selection records that arrived with the step
            args["selection_records"] = sum(sum(s.records) for s in rec.selection)
        return {"name": rec.phase, "cat": "engine", "ph": "X", "ts": start, "dur": round(end - start, 3),
                "pid": PID, "tid": ENGINE_TID, "args": args}

    def _async_id(self, request_id: str, seq_id: int) -> int:
        key = (request_id, seq_id)
        if key not in self._async_ids:
            self._async_ids[key] = len(self._async_ids) + 1
        return self._async_ids[key]

    def _request_slices(self, t: RequestTiming, trace_end: float, step: int) -> list[dict[str, Any]]:
        aid = self._async_id(t.request_id, t.seq_id)
        # clamp to a monotone chain so nested slices never poke out of their parent
        t0 = _us(t.arrival_s)
        t1 = max(t0, _us(t.first_scheduled_s)) if t.first_scheduled_s is not None else None
        t2 = max(t1 if t1 is not None else t0, _us(t.first_token_s)) if t.first_token_s is not None else None
        t3 = max(x for x in (t0, t1, t2) if x is not None)
        t3 = max(t3, _us(t.finish_s)) if t.finish_s is not None else max(t3, trace_end)
        args: dict[str, Any] = {
            "request_id": t.request_id, "seq_id": t.seq_id, "prompt_len": t.prompt_len,
            "num_output_tokens": t.num_output_tokens, "num_cached_tokens": t.num_cached_tokens,
            "num_preemptions": t.num_preemptions, "finish_reason": t.finish_reason,
            "finish_step": step,      # the GUI's timeline and event log count the same steps
        }
        if t.ttft_s is not None:
            args["ttft_ms"] = round(t.ttft_s * 1e3, 4)
        if t.tpot_s is not None:
            args["tpot_ms"] = round(t.tpot_s * 1e3, 4)
        name = f"request {t.request_id}"
        out = [_async("b", name, t0, aid, args)]
        bounds = [("queued", t0, t1), ("prefill", t1, t2), ("decode", t2, t3)]
        for phase, a, b in bounds:
            if a is not None and b is not None and b > a:
                out.append(_async("b", phase, a, aid))
                out.append(_async("e", phase, b, aid))
        out.append(_async("e", name, t3, aid))
        return out

    # -- output -------------------------------------------------------------------
    def _unfinished(self) -> list[dict[str, Any]]:
        """Requests still open, as one slice each to the end of the trace."""
        end = self._last_ts_us
        events = []
        next_id = len(self._async_ids) + 1   # past every finished request's id
        for i, (request_id, first_seen) in enumerate(sorted(self._open.items(), key=lambda kv: kv[1])):
            aid = next_id + i
            name = f"request {request_id}"
            events.append(_async("b", name, first_seen, aid,
                                 {"request_id": request_id, "unfinished": True}))
            events.append(_async("e", name, max(end, first_seen), aid))
        return events

    def _head(self) -> list[dict[str, Any]]:
        return [
            _meta("process_name", {"name": self._process_name}),
            _meta("thread_name", {"name": "engine steps"}, ENGINE_TID),
            _meta("thread_name", {"name": "requests"}, REQUESTS_TID),
            _meta("thread_sort_index", {"sort_index": 0}, ENGINE_TID),
        ]

    def _other_data(self) -> dict[str, Any]:
        return dict(self._metadata, num_steps=self.num_steps)

    def trace(self) -> dict[str, Any]:
        events = self._events + self._unfinished()
        # stable: equal timestamps keep their emission order (parent b before child b)
        events.sort(key=lambda e: e["ts"])
        return {"traceEvents": self._head() + events, "displayTimeUnit": "ms", "otherData": self._other_data()}

    def save(self, path: str | Path) -> None:
        """Write the trace so far, atomically, through the one writer (symlinks
        followed, non-regular targets refused, no temporary file left behind)."""
        write_text(path, json.dumps(self.trace(), separators=(",", ":")), "trace")


def build_trace(records: Iterable[StepRecord], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    w = TraceWriter(metadata=metadata)
    w.extend(records)
    return w.trace()


def write_chrome_trace(records: Iterable[StepRecord], path: str | Path,
                metadata: dict[str, Any] | None = None) -> None:
    w = TraceWriter(metadata=metadata)
    w.extend(records)
    w.save(path)


def _meta(name: str, args: dict[str, Any], tid: int = 0) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": PID, "tid": tid, "args": args}


def _instant(name: str, ts: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "cat": "engine", "ph": "i", "s": "t", "ts": ts, "pid": PID,
            "tid": ENGINE_TID, "args": args}


def _async(ph: str, name: str, ts: float, aid: int, args: dict[str, Any] | None = None) -> dict[str, Any]:
    ev = {"name": name, "cat": "request", "ph": ph, "ts": ts, "id": aid, "pid": PID, "tid": REQUESTS_TID}
    if args:
        ev["args"] = args
    return ev


def _counters(rec: StepRecord, ts: float) -> list[dict[str, Any]]:
    m = rec.metrics
    hit_rate = 100.0 * m.prefix_cache_hits / m.prefix_cache_queries if m.prefix_cache_queries else 0.0
    series = {
        "KV cache usage (%)": {"usage": 100.0 * m.kv_cache_usage_perc},
        "requests": {"running": m.num_requests_running, "waiting": m.num_requests_waiting},
        "throughput (tok/s)": {"total": m.tokens_per_s, "generation": m.gen_tokens_per_s},
        "prefix cache hit rate (%)": {"hit_rate": hit_rate},
        "memory waste (%)": {"waste": 100.0 * m.memory_waste},
        "blocks": {"free": m.num_free_blocks, "cached_free": m.num_cached_free_blocks,
                   "shared": m.num_shared_blocks},
        "preemptions": {"total": m.num_preemptions},
        "cow copies": {"total": m.num_cow_copies},
    }
    return [{"name": name, "ph": "C", "ts": ts, "pid": PID, "args": args} for name, args in series.items()]


# -- validation lives in trace_check; re-exported for existing callers ------------------

from .trace_check import validate_chrome_trace, validate_trace  # noqa: E402,F401
