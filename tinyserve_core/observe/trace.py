"""Chrome Trace Event JSON of an engine run, for Perfetto UI and chrome://tracing.

Layout (one process, "TinyServe engine"):

* thread "engine steps": one complete event ("X") per prefill/decode step, with the
  step's token counts, kernel times and event counts in `args`; preemptions and
  rejections as instant events ("i") on the same thread;
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
import math
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
                    "request_id": ev.request_id, "seq_id": ev.seq_id,
                    "num_blocks_freed": ev.num_blocks_freed}))
            elif isinstance(ev, Reject):
                self._open.pop(ev.request_id, None)
                out.append(_instant(f"reject {ev.request_id}", end, {
                    "request_id": ev.request_id, "reason": ev.reason}))
        out.extend(_counters(rec, end))
        for timing in rec.finished:
            self._open.pop(timing.request_id, None)
            out.extend(self._request_slices(timing, end))
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
        return {"name": rec.phase, "cat": "engine", "ph": "X", "ts": start, "dur": round(end - start, 3),
                "pid": PID, "tid": ENGINE_TID, "args": args}

    def _async_id(self, request_id: str, seq_id: int) -> int:
        key = (request_id, seq_id)
        if key not in self._async_ids:
            self._async_ids[key] = len(self._async_ids) + 1
        return self._async_ids[key]

    def _request_slices(self, t: RequestTiming, trace_end: float) -> list[dict[str, Any]]:
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


# -- validation -----------------------------------------------------------------------

_PHASES = {"X", "B", "E", "b", "e", "n", "i", "I", "C", "M"}
_META_NAMES = {"process_name", "thread_name", "process_sort_index", "thread_sort_index",
               "process_labels"}
_EPS_US = 1e-3


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_trace(obj: Any) -> list[str]:
    """Problems that would make Perfetto or chrome://tracing misread the trace; an
    empty list means valid. Checks: the container; required keys and types per phase;
    ts >= 0 and non-decreasing per track (thread, async id, counter name); every "b"
    closed by an "e" of the same name, LIFO per (cat, id); "X" slices nested, never
    partly overlapping, per thread."""
    problems: list[str] = []
    if isinstance(obj, dict):
        events = obj.get("traceEvents")
        if not isinstance(events, list):
            return ["top level: 'traceEvents' must be a list"]
    elif isinstance(obj, list):
        events = obj
    else:
        return ["top level: must be an object with 'traceEvents' or a list of events"]

    last_ts: dict[tuple, float] = {}
    async_stacks: dict[tuple, list[tuple[str, float]]] = {}
    x_by_thread: dict[tuple, list[tuple[float, float, int]]] = {}

    for i, ev in enumerate(events):
        where = f"event {i}"
        if not isinstance(ev, dict):
            problems.append(f"{where}: not an object")
            continue
        ph = ev.get("ph")
        if ph not in _PHASES:
            problems.append(f"{where}: unknown ph {ph!r}")
            continue
        where = f"event {i} ({ph} {ev.get('name')!r})"
        if not isinstance(ev.get("name"), str):
            problems.append(f"{where}: 'name' must be a string")
        if not isinstance(ev.get("pid"), int):
            problems.append(f"{where}: 'pid' must be an integer")
        if "args" in ev and not isinstance(ev["args"], dict):
            problems.append(f"{where}: 'args' must be an object")
        if ph == "M":
            if ev.get("name") not in _META_NAMES:
                problems.append(f"{where}: unknown metadata name")
            if not isinstance(ev.get("args"), dict):
                problems.append(f"{where}: metadata needs 'args'")
            elif ev["name"] in ("process_name", "thread_name") and not isinstance(ev["args"].get("name"), str):
                problems.append(f"{where}: args.name must be a string")
            if ev.get("name", "").startswith("thread") and not isinstance(ev.get("tid"), int):
                problems.append(f"{where}: thread metadata needs an integer 'tid'")
            continue
        ts = ev.get("ts")
        if not _is_num(ts) or ts < 0:
            problems.append(f"{where}: 'ts' must be a finite number >= 0, got {ts!r}")
            continue
        if ph in ("X", "B", "E", "i", "I") and not isinstance(ev.get("tid"), int):
            problems.append(f"{where}: 'tid' must be an integer")
            continue
        if ph in ("b", "e", "n"):
            if not isinstance(ev.get("cat"), str):
                problems.append(f"{where}: async events need a 'cat' string")
                continue
            if not isinstance(ev.get("id"), (int, str)) or isinstance(ev.get("id"), bool):
                problems.append(f"{where}: async events need an 'id' (integer or string)")
                continue
            track: tuple = ("async", ev["cat"], ev["id"])
        elif ph == "C":
            args = ev.get("args")
            if not isinstance(args, dict) or not args or not all(_is_num(v) for v in args.values()):
                problems.append(f"{where}: counter 'args' must map series names to finite numbers")
            track = ("counter", ev.get("pid"), ev.get("name"), ev.get("id"))
        else:
            track = ("thread", ev.get("pid"), ev.get("tid"))
        if ts < last_ts.get(track, -math.inf) - _EPS_US:
            problems.append(f"{where}: ts {ts} goes back in time on its track (after {last_ts[track]})")
        last_ts[track] = max(ts, last_ts.get(track, -math.inf))

        if ph == "X":
            dur = ev.get("dur")
            if not _is_num(dur) or dur < 0:
                problems.append(f"{where}: 'dur' must be a finite number >= 0, got {dur!r}")
                continue
            x_by_thread.setdefault((ev["pid"], ev["tid"]), []).append((ts, ts + dur, i))
        elif ph in ("i", "I") and ev.get("s", "t") not in ("g", "p", "t"):
            problems.append(f"{where}: instant scope 's' must be g, p or t")
        elif ph == "b":
            async_stacks.setdefault(track, []).append((ev["name"], ts))
        elif ph == "e":
            stack = async_stacks.get(track)
            if not stack:
                problems.append(f"{where}: 'e' without an open 'b' for cat={ev['cat']!r} id={ev['id']!r}")
            else:
                name, begin = stack.pop()
                if name != ev["name"]:
                    problems.append(f"{where}: closes {ev['name']!r} but the innermost open slice is {name!r}")
                if ts < begin - _EPS_US:
                    problems.append(f"{where}: ends before it begins")
        elif ph == "n" and not async_stacks.get(track):
            problems.append(f"{where}: async instant outside any open slice")

    for (_, cat, aid), stack in async_stacks.items():
        for name, _ts in stack:
            problems.append(f"async slice {name!r} (cat={cat!r} id={aid!r}) is never closed")

    for (pid, tid), slices in x_by_thread.items():
        open_ends: list[float] = []
        for start, end, i in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start + _EPS_US:
                open_ends.pop()
            if open_ends and end > open_ends[-1] + _EPS_US:
                problems.append(f"event {i}: X slice overlaps its neighbour on pid={pid} tid={tid} "
                                f"without nesting ({start}..{end} vs end {open_ends[-1]})")
            open_ends.append(end)
    return problems


def validate_chrome_trace(obj: Any) -> None:
    """`validate_trace` for callers that want an exception: ValueError listing the
    first problems."""
    problems = validate_trace(obj)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"invalid trace: {'; '.join(problems[:10])}{more}")
