"""`tinyserve check-trace`: validate a Chrome Trace JSON file (ours or any)."""

from __future__ import annotations

import json
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("check-trace", help="validate a Chrome Trace JSON file (ours or any)",
                       description=__doc__)
    p.add_argument("path", help="trace JSON file")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from ..errors import InputFileError
    from ..observe.trace import validate_trace

    try:
        with open(args.path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise InputFileError(args.path, None, f"cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(args.path, getattr(e, "lineno", None), f"not JSON: {e}") from None
    problems = validate_trace(obj)
    events = obj.get("traceEvents", []) if isinstance(obj, dict) else obj
    if not problems:
        print(f"{args.path}: valid, {len(events)} events")
        return 0
    for p in problems[:50]:
        print(f"{args.path}: {p}")
    if len(problems) > 50:
        print(f"... {len(problems) - 50} more")
    return 1
