"""Replay files: JSONL, one request per line; errors name the line and the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputFileError
from ...writers import AtomicWriter
from .spec import WorkloadRequest
from .text import TextCorpus, Tokenize

_REPLAY_KEYS = ("arrival_s", "prompt", "prompt_token_ids", "prompt_len", "max_tokens", "n",
                "salt", "group")


def load_replay(path: str | Path, tokenize: Tokenize | None = None,
                corpus: TextCorpus | None = None, seed: int = 0) -> list[WorkloadRequest]:
    """Requests from a JSONL file, one JSON object per line:

    ``{"arrival_s": float, "prompt": str | "prompt_len": int, "max_tokens": int, "n": int}``

    `prompt_token_ids` (a list of ints) may stand beside or instead of `prompt` and
    then wins; `prompt_len` asks for that many tokens of corpus text. `n` defaults to
    1; `salt` (str) and `group` (int) are optional. Blank lines are skipped. A bad
    line raises InputFileError(path, line_number, message naming the field)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputFileError(str(p), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputFileError(str(p), None, f"not UTF-8 text: {e.reason}") from None
    rng = np.random.default_rng(seed)
    out: list[WorkloadRequest] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(_replay_line(line, rng, tokenize, corpus))
        except _LineError as e:
            raise InputFileError(str(p), lineno, str(e)) from None
    if not out:
        raise InputFileError(str(p), None, "no requests (the file is empty)")
    out.sort(key=lambda r: r.arrival_s)  # stable: equal times keep file order
    return out


class _LineError(Exception):
    pass


def _replay_line(line: str, rng: np.random.Generator, tokenize: Tokenize | None,
                 corpus: TextCorpus | None) -> WorkloadRequest:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _LineError(f"invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in _REPLAY_KEYS:
            raise _LineError(f"unknown field {key!r} (allowed: {', '.join(_REPLAY_KEYS)})")

    def integer(key: str, lo: int, default: Any = ...) -> int:
        if key not in obj:
            if default is ...:
                raise _LineError(f"missing field {key!r}")
            return default
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise _LineError(f"field {key!r} must be an integer >= {lo}, got {v!r}")
        return v

    if "arrival_s" not in obj:
        raise _LineError("missing field 'arrival_s'")
    arrival = obj["arrival_s"]
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) \
            or not math.isfinite(arrival) or arrival < 0:
        raise _LineError(f"field 'arrival_s' must be a number >= 0, got {arrival!r}")
    max_tokens = integer("max_tokens", 1)
    n = integer("n", 1, 1)
    salt = obj.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise _LineError(f"field 'salt' must be a string, got {salt!r}")
    group = obj.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
        raise _LineError(f"field 'group' must be an integer, got {group!r}")

    prompt, ids = obj.get("prompt"), obj.get("prompt_token_ids")
    if "prompt_len" in obj and ("prompt" in obj or "prompt_token_ids" in obj):
        raise _LineError("give 'prompt' (or 'prompt_token_ids') or 'prompt_len', not both")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise _LineError(f"field 'prompt' must be a non-empty string, got {prompt!r}")
    if ids is not None:
        if (not isinstance(ids, list) or not ids
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids)):
            raise _LineError("field 'prompt_token_ids' must be a non-empty list of integers >= 0")
    if "prompt_len" in obj:
        num = integer("prompt_len", 1)
        if corpus is None:
            corpus = TextCorpus.from_dir(None)
        prompt, ids = corpus.passage(rng, num, tokenize)
    elif prompt is None and ids is None:
        raise _LineError("missing field 'prompt' (or 'prompt_len' or 'prompt_token_ids')")
    elif ids is None and tokenize is not None:
        ids = list(tokenize(prompt))
    plen = len(ids) if ids is not None else len(prompt.split())
    return WorkloadRequest(arrival_s=float(arrival), prompt=prompt, prompt_token_ids=ids,
                           prompt_len=plen, max_tokens=max_tokens, n=n, salt=salt, group=group)


def save_replay(requests: list[WorkloadRequest], path: str | Path, field: str = "out") -> None:
    """Write requests as a replay file that `load_replay` reads back exactly (through
    the one atomic writer: all of it or, on failure, the old file untouched)."""
    with AtomicWriter(path, field) as f:
        for r in requests:
            obj: dict[str, Any] = {"arrival_s": r.arrival_s}
            if r.prompt is not None:
                obj["prompt"] = r.prompt
            if r.prompt_token_ids is not None:
                obj["prompt_token_ids"] = list(r.prompt_token_ids)
            obj["max_tokens"] = r.max_tokens
            obj["n"] = r.n
            if r.salt is not None:
                obj["salt"] = r.salt
            if r.group is not None:
                obj["group"] = r.group
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
