"""Validation of Chrome Trace Event JSON (ours or anyone's), for `tinyserve check-trace`
and the exporters' tests.

The validator is total: whatever JSON-shaped value it is given (lists where strings
belong, null names, integers too big for a float, events missing keys) it returns a list
of problems and never raises. Values only become part of a track key after their type
is checked, so nothing unhashable reaches a dict."""

from __future__ import annotations

import math
from typing import Any

_PHASES = {"X", "B", "E", "b", "e", "n", "i", "I", "C", "M"}
_META_NAMES = {"process_name", "thread_name", "process_sort_index", "thread_sort_index",
               "process_labels"}
_EPS_US = 1e-3


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    """A finite number that converts to a float (an int past 1.8e308 does not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _short(x: Any) -> str:
    """repr for messages, cut short: a hostile value may be huge."""
    try:
        r = repr(x)
    except ValueError:          # an int past sys.int_info's digit limit has no repr
        return "<huge integer>"
    return r if len(r) <= 60 else r[:57] + "..."


def _events(obj: Any) -> list | str:
    if isinstance(obj, dict):
        events = obj.get("traceEvents")
        return events if isinstance(events, list) else "top level: 'traceEvents' must be a list"
    if isinstance(obj, list):
        return obj
    return "top level: must be an object with 'traceEvents' or a list of events"


def validate_trace(obj: Any) -> list[str]:
    """Problems that would make Perfetto or chrome://tracing misread the trace; an
    empty list means valid. Checks: the container; required keys and types per phase;
    ts >= 0 and non-decreasing per track (thread, async id, counter name); every "b"
    closed by an "e" of the same name, LIFO per (cat, id); "X" slices nested, never
    partly overlapping, per thread."""
    events = _events(obj)
    if isinstance(events, str):
        return [events]
    checker = _Checker()
    for i, ev in enumerate(events):
        checker.event(i, ev)
    return checker.finish()


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.last_ts: dict[tuple, float] = {}
        self.async_stacks: dict[tuple, list[tuple[str, float]]] = {}
        self.x_by_thread: dict[tuple, list[tuple[float, float, int]]] = {}

    def event(self, i: int, ev: Any) -> None:
        problems = self.problems
        if not isinstance(ev, dict):
            problems.append(f"event {i}: not an object")
            return
        ph = ev.get("ph")
        if not isinstance(ph, str) or ph not in _PHASES:
            problems.append(f"event {i}: unknown ph {_short(ph)}")
            return
        name, pid, tid = ev.get("name"), ev.get("pid"), ev.get("tid")
        where = f"event {i} ({ph} {_short(name)})"
        ok = True
        if not isinstance(name, str):
            problems.append(f"{where}: 'name' must be a string")
            ok = False
        if not _is_int(pid):
            problems.append(f"{where}: 'pid' must be an integer")
            ok = False
        if "args" in ev and not isinstance(ev["args"], dict):
            problems.append(f"{where}: 'args' must be an object")
        if ph == "M":
            self._metadata(where, name, tid, ev.get("args"))
            return
        ts = ev.get("ts")
        if not _is_num(ts) or ts < 0:
            problems.append(f"{where}: 'ts' must be a finite number >= 0, got {_short(ts)}")
            return
        if ph in ("X", "B", "E", "i", "I") and not _is_int(tid):
            problems.append(f"{where}: 'tid' must be an integer")
            return
        if not ok:
            return      # no track without a usable name and pid
        if ph in ("b", "e", "n"):
            self._async(i, where, ph, name, ts, ev)
        elif ph == "C":
            self._counter(where, name, pid, ts, ev)
        else:
            self._thread(i, where, ph, pid, tid, ts, ev)

    def _metadata(self, where: str, name: Any, tid: Any, args: Any) -> None:
        if not isinstance(name, str):
            return      # already reported
        if name not in _META_NAMES:
            self.problems.append(f"{where}: unknown metadata name")
        if not isinstance(args, dict):
            self.problems.append(f"{where}: metadata needs 'args'")
        elif name in ("process_name", "thread_name") and not isinstance(args.get("name"), str):
            self.problems.append(f"{where}: args.name must be a string")
        if name.startswith("thread") and not _is_int(tid):
            self.problems.append(f"{where}: thread metadata needs an integer 'tid'")

    def _advance(self, where: str, track: tuple, ts: float) -> None:
        last = self.last_ts.get(track, -math.inf)
        if ts < last - _EPS_US:
            self.problems.append(f"{where}: ts {ts} goes back in time on its track (after {last})")
        self.last_ts[track] = max(ts, last)

    def _async(self, i: int, where: str, ph: str, name: str, ts: float, ev: dict) -> None:
        cat, aid = ev.get("cat"), ev.get("id")
        if not isinstance(cat, str):
            self.problems.append(f"{where}: async events need a 'cat' string")
            return
        if not (_is_int(aid) or isinstance(aid, str)):
            self.problems.append(f"{where}: async events need an 'id' (integer or string)")
            return
        track = ("async", cat, aid)
        self._advance(where, track, ts)
        stack = self.async_stacks.setdefault(track, [])
        if ph == "b":
            stack.append((name, ts))
        elif ph == "e":
            if not stack:
                self.problems.append(f"{where}: 'e' without an open 'b' for cat={cat!r} id={_short(aid)}")
                return
            open_name, begin = stack.pop()
            if open_name != name:
                self.problems.append(f"{where}: closes {name!r} but the innermost open slice is {open_name!r}")
            if ts < begin - _EPS_US:
                self.problems.append(f"{where}: ends before it begins")
        elif not stack:
            self.problems.append(f"{where}: async instant outside any open slice")

    def _counter(self, where: str, name: str, pid: int, ts: float, ev: dict) -> None:
        args, cid = ev.get("args"), ev.get("id")
        if not isinstance(args, dict) or not args or not all(_is_num(v) for v in args.values()):
            self.problems.append(f"{where}: counter 'args' must map series names to finite numbers")
        if cid is not None and not (_is_int(cid) or isinstance(cid, str)):
            self.problems.append(f"{where}: counter 'id' must be an integer or a string")
            return
        self._advance(where, ("counter", pid, name, cid), ts)

    def _thread(self, i: int, where: str, ph: str, pid: int, tid: int, ts: float, ev: dict) -> None:
        self._advance(where, ("thread", pid, tid), ts)
        if ph == "X":
            dur = ev.get("dur")
            if not _is_num(dur) or dur < 0:
                self.problems.append(f"{where}: 'dur' must be a finite number >= 0, got {_short(dur)}")
                return
            end = ts + dur
            if not math.isfinite(end):
                self.problems.append(f"{where}: ts + dur overflows")
                return
            self.x_by_thread.setdefault((pid, tid), []).append((ts, end, i))
        elif ph in ("i", "I") and ev.get("s", "t") not in ("g", "p", "t"):
            self.problems.append(f"{where}: instant scope 's' must be g, p or t")

    def finish(self) -> list[str]:
        for (_, cat, aid), stack in self.async_stacks.items():
            for name, _ts in stack:
                self.problems.append(f"async slice {name!r} (cat={cat!r} id={_short(aid)}) is never closed")
        for (pid, tid), slices in self.x_by_thread.items():
            open_ends: list[float] = []
            for start, end, i in sorted(slices, key=lambda s: (s[0], -s[1])):
                while open_ends and open_ends[-1] <= start + _EPS_US:
                    open_ends.pop()
                if open_ends and end > open_ends[-1] + _EPS_US:
                    self.problems.append(f"event {i}: X slice overlaps its neighbour on pid={pid} tid={tid} "
                                         f"without nesting ({start}..{end} vs end {open_ends[-1]})")
                open_ends.append(end)
        return self.problems


def validate_chrome_trace(obj: Any) -> None:
    """`validate_trace` for callers that want an exception: ValueError listing the
    first problems."""
    problems = validate_trace(obj)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"invalid trace: {'; '.join(problems[:10])}{more}")
