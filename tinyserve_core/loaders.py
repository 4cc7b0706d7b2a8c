"""One discipline for every file the project reads (session configs, replay and query
files, scene specs, model folders, traces): a bounded read, UTF-8 checked, JSON with a
depth limit and numbers that fit, and every problem raised as one InputFileError that
reads `path[:line]: field: problem` (the CLI prints it on one line and exits 2).

Callers validate the types and ranges of what they get back and raise InputFileError
with the same path (and line) themselves; `FileContext.error` builds one."""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputFileError

MiB = 1 << 20
# Deeper than any file of ours; the C JSON scanner would otherwise recurse until
# RecursionError on a hostile file.
MAX_JSON_DEPTH = 64
# An int literal longer than this is no count, id or size of ours (int() of 5,000 digits
# is slow and float() of it overflows).
MAX_INT_DIGITS = 40


@dataclass(frozen=True)
class FileContext:
    """Where a value came from, for messages: `path[:line]`."""
    path: str
    line: int | None = None

    def error(self, field: str, problem: str) -> InputFileError:
        return InputFileError(self.path, self.line, f"{field}: {problem}")

    def at(self, line: int) -> "FileContext":
        return FileContext(self.path, line)


def read_bytes(path: str | Path, *, max_bytes: int, field: str = "file") -> bytes:
    """The whole file, refused when it is missing, not a regular file or over max_bytes."""
    p = Path(path)
    ctx = FileContext(str(p))
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ctx.error(field, "no such file") from None
    except OSError as e:
        raise ctx.error(field, f"cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ctx.error(field, "is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise ctx.error(field, "is not a regular file")
    if st.st_size > max_bytes:
        raise ctx.error(field, f"{st.st_size} bytes is over the limit of {max_bytes}")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)   # the file may grow after stat
    except OSError as e:
        raise ctx.error(field, f"cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise ctx.error(field, f"over the limit of {max_bytes} bytes")
    return data


def decode_utf8(data: bytes, ctx: FileContext, field: str = "file") -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ctx.at(line).error(field, f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | Path, *, max_bytes: int, field: str = "file") -> str:
    """A bounded, UTF-8 checked text file (a leading byte-order mark is dropped)."""
    return decode_utf8(read_bytes(path, max_bytes=max_bytes, field=field), FileContext(str(path)), field)


def _int(s: str) -> int:
    digits = s.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise _NumberError(f"integer of {len(digits)} digits is out of range")
    return int(s)


def _float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):
        raise _NumberError(f"number {s[:24]} is out of range")
    return x


def _constant(s: str):
    raise _NumberError(f"{s} is not a number JSON allows")


class _NumberError(ValueError):
    pass


def _depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                return False
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return True


def loads_json(text: str, ctx: FileContext, *, field: str = "json", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON with finite numbers, ints of at most MAX_INT_DIGITS digits, no NaN/Infinity
    literals and at most max_depth levels of nesting."""
    try:
        obj = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _NumberError as e:
        raise ctx.error(field, str(e)) from None
    except json.JSONDecodeError as e:
        where = ctx if ctx.line is not None else ctx.at(e.lineno)
        raise where.error(field, f"invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ctx.error(field, f"nested deeper than {max_depth} levels") from None
    if not _depth_ok(obj, max_depth):
        raise ctx.error(field, f"nested deeper than {max_depth} levels")
    return obj


def load_json(path: str | Path, *, max_bytes: int, field: str = "json") -> Any:
    """A whole-file JSON document under the discipline above."""
    text = read_text(path, max_bytes=max_bytes, field="file")
    return loads_json(text, FileContext(str(path)), field=field)


def iter_jsonl(path: str | Path, *, max_bytes: int, max_line_chars: int = MiB,
               field: str = "json") -> Iterator[tuple[FileContext, Any]]:
    """(context with the line number, value) for every non-blank, non-# line."""
    text = read_text(path, max_bytes=max_bytes, field="file")
    ctx = FileContext(str(path))
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        at = ctx.at(n)
        if len(s) > max_line_chars:
            raise at.error("line", f"{len(s)} characters is over the limit of {max_line_chars}")
        yield at, loads_json(s, at, field=field)
