"""Recordings of what a subscriber received: the raw ZMQ frames of every message with
their receive time, so a recording replays byte for byte into the same model, at any
speed, and exports as a Perfetto trace.

File layout (all lengths unsigned 32-bit big-endian):
    b"TSKVREC\\0" | len | msgpack header {"format", "version", "endpoints", "topic"}
    then per message: len | msgpack [recv_ts: float, stream: int, kind: int, frames: [bytes]]
`kind` is 0 live, 1 replay reply, 2 replay timed out (no frames); `stream` indexes
`endpoints` ([{"url", "replay_url", "rank"}]). Written through an AtomicWriter (a
recording is complete or absent) and read through the bounded, validated loader
(`path: field: problem` errors)."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec

from ..loaders import FileContext, read_bytes
from ..writers import AtomicWriter, write_json
from .cache_model import CacheModel
from .subscriber import LIVE, REPLAY, REPLAY_TIMEOUT, Endpoint, Stream
from .wire import DecodedBatch

MAGIC = b"TSKVREC\0"
FORMAT = "tinyserve-kv-recording"
VERSION = 1
MAX_RECORDING_BYTES = 2 << 30
MAX_RECORD_BYTES = 256 << 20
_LEN = struct.Struct(">I")


class Recorder:
    """Appends messages as they are received; `close()` commits, `abort()` drops."""

    def __init__(self, path: str | Path, endpoints: list[Endpoint], topic: str = ""):
        self._w = AtomicWriter(path, "record", binary=True)
        self._enc = msgspec.msgpack.Encoder()
        head = self._enc.encode({"format": FORMAT, "version": VERSION, "topic": topic, "endpoints": [
            {"url": e.url, "replay_url": e.replay_url, "rank": e.rank} for e in endpoints]})
        self._w.write(MAGIC + _LEN.pack(len(head)) + head)
        self.messages = 0

    def __call__(self, stream: int, kind: int, frames: list[bytes], recv_ts: float) -> None:
        body = self._enc.encode((recv_ts, stream, kind, frames))
        self._w.write(_LEN.pack(len(body)) + body)
        self.messages += 1

    def close(self) -> Path:
        return self._w.commit()

    def abort(self) -> None:
        self._w.abort()


@dataclass(frozen=True, slots=True)
class Message:
    recv_ts: float
    stream: int
    kind: int
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Recording:
    endpoints: list[Endpoint]
    topic: str
    messages: list[Message]


class _Header(msgspec.Struct):
    format: str
    version: int
    endpoints: list[dict]
    topic: str = ""


def load_recording(path: str | Path, *, max_bytes: int = MAX_RECORDING_BYTES) -> Recording:
    data = read_bytes(path, max_bytes=max_bytes, field="recording")
    ctx = FileContext(str(path))
    if not data.startswith(MAGIC):
        raise ctx.error("header", "not a TinyServe KV-event recording (bad magic)")
    pos = len(MAGIC)
    head_bytes, pos = _chunk(data, pos, ctx, "header")
    try:
        head = msgspec.msgpack.decode(head_bytes, type=_Header)
    except msgspec.DecodeError as e:
        raise ctx.error("header", str(e)) from None
    if head.format != FORMAT:
        raise ctx.error("header.format", f"expected {FORMAT!r}, got {head.format!r}")
    if head.version != VERSION:
        raise ctx.error("header.version", f"version {head.version} is not supported (this reads {VERSION})")
    endpoints = []
    for i, e in enumerate(head.endpoints):
        url, rep, rank = e.get("url"), e.get("replay_url"), e.get("rank")
        if not isinstance(url, str) or not (rep is None or isinstance(rep, str)) \
                or isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ctx.error(f"header.endpoints[{i}]", "expected {url: str, replay_url: str|null, rank: int >= 0}")
        endpoints.append(Endpoint(url, rep, rank))
    dec = msgspec.msgpack.Decoder(tuple[float, int, int, list[bytes]])
    messages = []
    while pos < len(data):
        n = len(messages)
        body, pos = _chunk(data, pos, ctx, f"message {n}")
        try:
            ts, stream, kind, frames = dec.decode(body)
        except msgspec.DecodeError as e:
            raise ctx.error(f"message {n}", str(e)) from None
        if not 0 <= stream < len(endpoints):
            raise ctx.error(f"message {n}.stream", f"{stream} is not one of the {len(endpoints)} endpoints")
        if kind not in (LIVE, REPLAY, REPLAY_TIMEOUT):
            raise ctx.error(f"message {n}.kind", f"expected 0, 1 or 2, got {kind}")
        if messages and ts < messages[-1].recv_ts:
            raise ctx.error(f"message {n}.recv_ts", "goes back in time")
        messages.append(Message(ts, stream, kind, tuple(frames)))
    return Recording(endpoints, head.topic, messages)


def _chunk(data: bytes, pos: int, ctx: FileContext, field: str) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise ctx.error(field, "truncated length")
    (n,) = _LEN.unpack_from(data, pos)
    if n > MAX_RECORD_BYTES:
        raise ctx.error(field, f"{n} bytes is over the limit of {MAX_RECORD_BYTES}")
    if pos + 4 + n > len(data):
        raise ctx.error(field, f"truncated: {n} bytes announced, {len(data) - pos - 4} left")
    return data[pos + 4:pos + 4 + n], pos + 4 + n


def play(rec: Recording, model: CacheModel, *, speed: float = 0.0,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic,
         stop: Callable[[], bool] = lambda: False,
         on_message: Callable[[Message], None] | None = None,
         on_applied: Callable[[Message, int, int, DecodedBatch, bool], None] | None = None,
         ) -> list[Stream]:
    """Feed a recording into `model` as it was received: the same Streams, so the same
    order, gaps, replays and counts. `speed` x real time; 0 = as fast as possible.
    `stop()` is asked between messages (Ctrl-C, a GUI's stop button); `on_applied(message,
    stream, seq, batch, replayed)` follows each batch applied, in sequence order."""
    streams = [Stream(e, model, can_replay=e.replay_url is not None) for e in rec.endpoints]
    current: list[Message] = []
    if on_applied is not None:
        for i, st in enumerate(streams):
            st.on_applied = (lambda i: lambda seq, b, r: on_applied(current[0], i, seq, b, r))(i)
    t0 = rec.messages[0].recv_ts if rec.messages else 0.0
    start = clock()
    for m in rec.messages:
        if stop():
            break
        if speed > 0:
            wait = (m.recv_ts - t0) / speed - (clock() - start)
            if wait > 0:
                sleep(wait)
        current[:] = [m]
        st = streams[m.stream]
        frames = list(m.frames)
        if m.kind == LIVE:
            st.on_live(frames, m.recv_ts)
        elif m.kind == REPLAY:
            st.on_replay(frames, m.recv_ts)
        else:
            st.finish_replay(timed_out=True)
        if on_message is not None:
            on_message(m)
    return streams


def export_perfetto(rec: Recording, path: str | Path) -> int:
    """A Chrome-trace JSON (Perfetto UI): one process per rank; per batch applied (in
    sequence order, as the live view applied it) an instant event with its block counts
    and the counters "blocks" (live, stored and removed in that batch). Time is receive
    time from the first message. Returns the number of trace events."""
    model = CacheModel()
    events: list[dict] = []
    for r in sorted({e.rank for e in rec.endpoints}):
        events.append({"name": "process_name", "ph": "M", "pid": r + 1, "tid": 0,
                       "args": {"name": f"rank {r}"}})
    t0 = rec.messages[0].recv_ts if rec.messages else 0.0
    last = {"stored": 0, "gone": 0}

    def applied(m: Message, stream: int, seq: int, batch: DecodedBatch, replayed: bool) -> None:
        rank = rec.endpoints[stream].rank
        gone = model.removed + model.cleared
        stored, removed = model.stored - last["stored"], gone - last["gone"]
        last["stored"], last["gone"] = model.stored, gone
        ts = round((m.recv_ts - t0) * 1e6, 3)
        events.append({"name": "kv batch (replayed)" if replayed else "kv batch", "cat": "kv",
                       "ph": "i", "s": "p", "ts": ts, "pid": rank + 1, "tid": 1,
                       "args": {"seq": seq, "stored": stored, "removed": removed,
                                "events": len(batch.events) + batch.other}})
        events.append({"name": "blocks", "ph": "C", "ts": ts, "pid": rank + 1,
                       "args": {"live": model.live_by_rank().get(rank, 0), "stored": stored,
                                "removed": removed}})
    play(rec, model, on_applied=applied)
    write_json(path, {"traceEvents": events, "displayTimeUnit": "ms",
                      "otherData": {"source": "tinyserve attach recording"}}, "trace", indent=None)
    return len(events)
