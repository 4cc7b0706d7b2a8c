"""A trace streamed to disk as the run goes: each step's events are written when the step
arrives, so a long run never holds its trace in memory, and an interrupted run still ends
with a complete file (`close()` writes the still-open requests and the JSON tail).

Events go out in emission order, not sorted by time: every track (engine thread, one
request's async id, one counter) is still non-decreasing, which is what Perfetto,
chrome://tracing and `validate_trace` need. Until `close()` the bytes sit in a temporary
file beside the target (see tinyserve_core.writers), so the target is never half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..writers import AtomicWriter
from .trace import TraceWriter

_SEP = (",", ":")


def _dumps(events: list[dict[str, Any]]) -> str:
    return "".join(",\n" + json.dumps(e, separators=_SEP) for e in events)


class StreamingTraceWriter(TraceWriter):
    """`TraceWriter` whose events go straight to `path`; `close()` finishes the file
    (call it on interrupt too), `abort()` drops it and keeps whatever was there."""

    def __init__(self, path: str | Path, process_name: str = "TinyServe engine",
                 metadata: dict[str, Any] | None = None):
        super().__init__(process_name, metadata)
        self._out = AtomicWriter(path, "trace")
        head = self._head()
        # the head is never empty, so every later event starts with its comma
        self._out.write('{"traceEvents":[\n' + json.dumps(head[0], separators=_SEP) + _dumps(head[1:]))

    @property
    def path(self) -> Path:
        return self._out.path

    def _emit(self, events: list[dict[str, Any]]) -> None:
        # one write per step: a step's events land together or not at all
        self._out.write(_dumps(events))

    def trace(self) -> dict[str, Any]:
        raise TypeError("a streaming trace lives in its file; read the file after close()")

    def close(self) -> Path:
        """Close the open requests, write the tail and move the file into place."""
        if not self._out.done:
            tail = {"displayTimeUnit": "ms", "otherData": self._other_data()}
            self._out.write(_dumps(self._unfinished()) + "\n]," + json.dumps(tail, separators=_SEP)[1:] + "\n")
        return self._out.commit()

    def abort(self) -> None:
        self._out.abort()

    def save(self, path: str | Path) -> None:
        raise TypeError("a streaming trace is written by close()")
