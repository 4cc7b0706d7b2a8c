"""Replay files: JSONL, one request per line, read under the loader discipline
(tinyserve_core/loaders.py); errors read `path:line: field: problem`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders import MiB, FileContext, iter_jsonl
from ..config.sections import MAX_SAMPLES, MAX_TOKENS
from .spec import MAX_ARRIVAL_S, ModelLimits, WorkloadRequest
from ...writers import AtomicWriter
from .text import TextCorpus, Tokenize

_REPLAY_KEYS = ("arrival_s", "prompt", "prompt_token_ids", "prompt_len", "max_tokens", "n",
                "salt", "group")
# A replay file is read whole; 256 MiB holds millions of requests.
MAX_REPLAY_BYTES = 256 * MiB
# One request's line: a prompt of a 1M-token context is about 4 MB of text; a longer
# line is no prompt any model here could take.
MAX_REPLAY_LINE_CHARS = 4 * MiB
# The workload generators' request limit, for files too.
MAX_REPLAY_REQUESTS = 10_000_000
_MAX_GROUP = 2**31 - 1


def load_replay(path: str | Path, tokenize: Tokenize | None = None,
                corpus: TextCorpus | None = None, seed: int = 0,
                limits: ModelLimits | None = None) -> list[WorkloadRequest]:
    """Requests from a JSONL file, one JSON object per line:

    ``{"arrival_s": float, "prompt": str | "prompt_len": int, "max_tokens": int, "n": int}``

    `prompt_token_ids` (a list of ints) may stand beside or instead of `prompt` and
    then wins; `prompt_len` asks for that many tokens of corpus text. `n` defaults to
    1; `salt` (str) and `group` (int) are optional. Blank and `#` lines are skipped.
    With the model's `limits`, prompts longer than its context (checked before any
    text is built) and token ids outside its vocabulary are refused here, not mid-run.
    A bad line raises InputFileError(path, line_number, "field: problem")."""
    rng = np.random.default_rng(seed)
    out: list[WorkloadRequest] = []
    for at, obj in iter_jsonl(path, max_bytes=MAX_REPLAY_BYTES, max_line_chars=MAX_REPLAY_LINE_CHARS):
        if len(out) >= MAX_REPLAY_REQUESTS:
            raise at.error("line", f"more than {MAX_REPLAY_REQUESTS} requests")
        out.append(_replay_line(obj, at, rng, tokenize, corpus, limits))
    if not out:
        raise FileContext(str(path)).error("file", "no requests (the file is empty)")
    out.sort(key=lambda r: r.arrival_s)  # stable: equal times keep file order
    return out


def _integer(obj: dict, at: FileContext, key: str, lo: int, hi: int, default: Any = ...) -> int:
    if key not in obj:
        if default is ...:
            raise at.error(key, "missing")
        return default
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise at.error(key, f"must be an integer from {lo} to {hi}, got {v!r}")
    return v


def _replay_line(obj: Any, at: FileContext, rng: np.random.Generator, tokenize: Tokenize | None,
                 corpus: TextCorpus | None, limits: ModelLimits | None) -> WorkloadRequest:
    if not isinstance(obj, dict):
        raise at.error("line", f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in _REPLAY_KEYS:
            # shown as written, quoted: it may be empty or hold ': '
            raise at.error(json.dumps(key, ensure_ascii=False), f"unknown field (allowed: {', '.join(_REPLAY_KEYS)})")

    if "arrival_s" not in obj:
        raise at.error("arrival_s", "missing")
    arrival = obj["arrival_s"]
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) \
            or not 0 <= arrival <= MAX_ARRIVAL_S:
        raise at.error("arrival_s", f"must be a number of seconds from 0 to {MAX_ARRIVAL_S:g}, got {arrival!r}")
    max_tokens = _integer(obj, at, "max_tokens", 1, MAX_TOKENS)
    n = _integer(obj, at, "n", 1, MAX_SAMPLES, 1)
    salt = obj.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise at.error("salt", f"must be a string, got {salt!r}")
    group = obj.get("group")
    if group is not None:
        group = _integer(obj, at, "group", 0, _MAX_GROUP)

    prompt, ids = obj.get("prompt"), obj.get("prompt_token_ids")
    if "prompt_len" in obj and ("prompt" in obj or "prompt_token_ids" in obj):
        raise at.error("prompt_len", "give 'prompt' (or 'prompt_token_ids') or 'prompt_len', not both")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise at.error("prompt", f"must be a non-empty string, got {prompt!r}")
    if ids is not None:
        if (not isinstance(ids, list) or not ids
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids)):
            raise at.error("prompt_token_ids", "must be a non-empty list of integers >= 0")
        _check_prompt(at, "prompt_token_ids", ids, limits)
    if "prompt_len" in obj:
        num = _integer(obj, at, "prompt_len", 1, MAX_TOKENS)
        problem = limits.length_problem(num) if limits is not None else None
        if problem is not None:   # before any text is built
            raise at.error("prompt_len", problem)
        if corpus is None:
            corpus = TextCorpus.from_dir(None)
        prompt, ids = corpus.passage(rng, num, tokenize)
        if ids is not None:
            _check_prompt(at, "prompt_len", ids, limits)
    elif prompt is None and ids is None:
        raise at.error("prompt", "missing (give 'prompt', 'prompt_len' or 'prompt_token_ids')")
    elif ids is None and tokenize is not None:
        ids = list(tokenize(prompt))
        _check_prompt(at, "prompt", ids, limits)
    plen = len(ids) if ids is not None else len(prompt.split())
    return WorkloadRequest(arrival_s=float(arrival), prompt=prompt, prompt_token_ids=ids,
                           prompt_len=plen, max_tokens=max_tokens, n=n, salt=salt, group=group)


def _check_prompt(at: FileContext, field: str, ids: list[int], limits: ModelLimits | None) -> None:
    """The model's limits, for ids from the file or from the model's own tokenizer (a
    tokenizer larger than the model's vocabulary is caught here too)."""
    if limits is None:
        return
    problem = limits.length_problem(len(ids)) or limits.vocab_problem(ids)
    if problem is not None:
        raise at.error(field, problem)


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
