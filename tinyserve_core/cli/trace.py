"""`tinyserve check-trace`: validate a Chrome Trace JSON file (ours or any).

Prints every problem (exit 1) or "valid" (exit 0); a file that cannot be read as JSON
(missing, not UTF-8, over the size limit, nested too deep, numbers out of range) is one
line and exit 2."""

from __future__ import annotations

from typing import Any

from ..loaders import MiB

# Parsing costs about 6x the file size in memory and ~0.3 s/MB on one core: 512 MiB is
# a long streamed run's trace and stays near 4 GB of RAM on a small (2-core, 24 GB) box.
MAX_TRACE_BYTES = 512 * MiB
_MAX_PRINTED = 50


def register(sub) -> None:
    p = sub.add_parser("check-trace", help="validate a Chrome Trace JSON file (ours or any)",
                       description=__doc__)
    p.add_argument("path", help="trace JSON file")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from ..loaders import load_json
    from ..observe.trace_check import validate_trace

    obj = load_json(args.path, max_bytes=MAX_TRACE_BYTES, field="trace")
    problems = validate_trace(obj)
    events = obj.get("traceEvents", []) if isinstance(obj, dict) else obj
    if not problems:
        print(f"{args.path}: valid, {len(events)} events")
        return 0
    for p in problems[:_MAX_PRINTED]:
        print(f"{args.path}: {p}")
    if len(problems) > _MAX_PRINTED:
        print(f"... {len(problems) - _MAX_PRINTED} more")
    return 1
