"""Subscribing to the KV events of one or more publishers (a server's data-parallel
ranks), applying each publisher's batches to a CacheModel in sequence order.

`Stream` is one publisher's ordering, with no sockets: live batches in order are
applied; an older one is a duplicate and dropped; a newer one is a gap: it waits, and
the missing range is asked of the replay endpoint (a late join asks from 0). While a
replay is pending, live batches wait for it; when it ends, or times out, they are
applied in order and the live view goes on. Frames that do not parse are counted as
malformed and skipped; a well-framed batch with a bad payload still consumes its seq.
Recordings replay through the same class, so a recording reproduces the live view.

`Subscriber` owns the ZMQ sockets (one SUB per publisher, connecting by default,
binding with `bind=True` for publishers that connect; one DEALER per replay endpoint)
and is driven by `poll(timeout_ms)`, non-blocking at 0: a worker thread or the CLI
loops on it. Every socket is used only from the thread that calls `poll`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import zmq

from ..errors import ConfigError
from ..observe.kv_event_wire import END_SEQ, seq_bytes, seq_from_bytes
from .cache_model import CacheModel
from .wire import DecodedBatch, PayloadError, decode_payload

LIVE, REPLAY, REPLAY_TIMEOUT = 0, 1, 2      # kinds of received frames (also in recordings)
_SCHEMES = ("tcp://", "ipc://", "inproc://")


def offset_port(url: str, rank: int) -> str:
    """vLLM's data-parallel rule: rank r publishes on port + r (`inproc`/`ipc`: `_dp<r>`)."""
    if rank == 0:
        return url
    if url.startswith("tcp://"):
        host, _, port = url[6:].rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("kv_events", f"{url!r} has no port to offset by the rank")
        return f"tcp://{host}:{int(port) + rank}"
    if url.startswith(("inproc://", "ipc://")):
        return f"{url}_dp{rank}"
    raise ConfigError("kv_events", f"{url!r}: expected tcp://HOST:PORT, ipc:// or inproc://")


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    replay_url: str | None = None
    rank: int = 0


def expand_endpoints(urls: list[str], replay_urls: list[str] | None, data_parallel_size: int) -> list[Endpoint]:
    """One Endpoint per (server, rank): each URL and its paired replay URL (in order)
    expanded to `data_parallel_size` ports."""
    replay_urls = list(replay_urls or [])
    if len(replay_urls) > len(urls):
        raise ConfigError("replay", f"{len(replay_urls)} replay URLs for {len(urls)} event URLs")
    if data_parallel_size < 1:
        raise ConfigError("data_parallel_size", f"must be >= 1, got {data_parallel_size}")
    out = []
    for i, url in enumerate(urls):
        rep = replay_urls[i] if i < len(replay_urls) else None
        for r in range(data_parallel_size):
            out.append(Endpoint(offset_port(url, r), None if rep is None else offset_port(rep, r), r))
    return out


@dataclass
class StreamStats:
    url: str
    rank: int
    state: str = "waiting"      # waiting | live | replaying | replay timed out
    batches: int = 0            # distinct seqs decoded and applied
    malformed: int = 0          # frames, payloads or events that could not be decoded
    gaps: int = 0               # sequence gaps seen (a late join counts as one)
    last_seq: int | None = None
    replayed_batches: int = 0   # applied from a replay (the live stream had lost them)
    duplicates: int = 0
    replay_timeouts: int = 0
    last_receive: float | None = None   # wall time of the last live frame: a silent rank
    other_types: dict[str, int] = field(default_factory=dict)


class Stream:
    """One publisher's sequence order (see the module doc)."""

    def __init__(self, endpoint: Endpoint, model: CacheModel, *, can_replay: bool):
        self.endpoint = endpoint
        self.model = model
        self.can_replay = can_replay
        self.stats = StreamStats(endpoint.url, endpoint.rank)
        self.expected: int | None = None      # next seq to apply; None: take the first one
        self.pending: dict[int, bytes] = {}   # live batches waiting for a replay
        self.replaying = False
        # called after each batch is applied: (seq, batch, came by replay)
        self.on_applied: Callable[[int, DecodedBatch, bool], None] | None = None

    # -- live ----------------------------------------------------------------------
    def on_live(self, frames: list[bytes], now: float) -> int | None:
        """One live message; returns the start seq of a replay to ask for, if any."""
        self.stats.last_receive = now
        parsed = self._parse(frames[-2:] if len(frames) == 3 else None)
        if parsed is None:
            return None
        seq, payload = parsed
        if self.replaying:
            self._hold(seq, payload)
            return None
        if self.expected is None:
            if seq > 0 and self.can_replay:           # joined late: fetch the buffered past
                self.stats.gaps += 1
                return self._start_replay(0, seq, payload)
            self.expected = seq
        if seq < self.expected:
            self.stats.duplicates += 1
            return None
        if seq > self.expected:
            self.stats.gaps += 1
            if self.can_replay:
                return self._start_replay(self.expected, seq, payload)
            self.expected = seq                        # no replay: accept the loss, go on
        self._apply(seq, payload)
        self.stats.state = "live"
        return None

    def _start_replay(self, start: int, seq: int, payload: bytes) -> int:
        self._hold(seq, payload)
        self.replaying = True
        self.stats.state = "replaying"
        return start

    def _hold(self, seq: int, payload: bytes) -> None:
        if (self.expected is not None and seq < self.expected) or seq in self.pending:
            self.stats.duplicates += 1
        else:
            self.pending[seq] = payload

    # -- replay --------------------------------------------------------------------
    def on_replay(self, frames: list[bytes], now: float) -> bool:
        """One replay reply ([b"", topic, seq, payload], or vLLM's [b"", seq, payload]);
        True at the end marker, after which the waiting live batches are applied."""
        if len(frames) in (3, 4) and frames[0] == b"" and frames[-2] == END_SEQ:
            self.finish_replay(timed_out=False)
            return True
        parsed = self._parse(frames[-2:] if len(frames) in (3, 4) and frames[0] == b"" else None)
        if parsed is None:
            return False
        seq, payload = parsed
        if self.expected is None:
            self.expected = seq                        # the oldest batch the publisher kept
        if seq < self.expected:
            self.stats.duplicates += 1
            return False
        was_live = self.pending.pop(seq, None) is not None
        if not was_live:             # counted as replayed only when the live stream lost it
            self.stats.replayed_batches += 1
        self._apply(seq, payload, replayed=not was_live)
        return False

    def finish_replay(self, *, timed_out: bool) -> None:
        self.replaying = False
        if timed_out:
            self.stats.replay_timeouts += 1
        for seq in sorted(self.pending):
            payload = self.pending.pop(seq)
            if self.expected is None or seq >= self.expected:
                self.expected = seq if self.expected is None else max(self.expected, seq)
                self._apply(seq, payload)
            else:
                self.stats.duplicates += 1
        self.stats.state = "replay timed out" if timed_out else "live"

    # -- common --------------------------------------------------------------------
    def _parse(self, pair: list[bytes] | None) -> tuple[int, bytes] | None:
        if pair is None:
            self.stats.malformed += 1
            return None
        try:
            return seq_from_bytes(pair[0]), pair[1]
        except ValueError:
            self.stats.malformed += 1
            return None

    def _apply(self, seq: int, payload: bytes, replayed: bool = False) -> None:
        self.expected = seq + 1
        self.stats.last_seq = seq
        try:
            batch = decode_payload(payload)
        except PayloadError:
            self.stats.malformed += 1
            return
        self.stats.batches += 1
        self.stats.malformed += batch.malformed_events
        for name, n in batch.other_types.items():
            self.stats.other_types[name] = self.stats.other_types.get(name, 0) + n
        self.model.apply(batch, self.endpoint.rank)
        if self.on_applied is not None:
            self.on_applied(seq, batch, replayed)


FrameSink = Callable[[int, int, list[bytes], float], None]   # (stream index, kind, frames, recv time)


class Subscriber:
    """The sockets of every endpoint, feeding one CacheModel. `on_frames` (a recorder)
    sees every message as received, before it is applied."""

    def __init__(self, endpoints: list[Endpoint], model: CacheModel, *, topic: str = "",
                 bind: bool = False, replay_timeout_s: float = 2.0,
                 on_frames: FrameSink | None = None, context: zmq.Context | None = None):
        if not endpoints:
            raise ConfigError("kv_events", "at least one endpoint is needed")
        for e in endpoints:     # checked now: a replay is asked for mid-run, when it is too late
            if e.replay_url is not None and not e.replay_url.startswith(_SCHEMES):
                raise ConfigError("replay", f"{e.replay_url!r}: expected tcp://HOST:PORT, ipc:// or inproc://")
        self.model = model
        self.endpoints = endpoints
        self.replay_timeout_s = replay_timeout_s
        self.on_frames = on_frames
        self.ctx = context or zmq.Context.instance()
        self.streams = [Stream(e, model, can_replay=e.replay_url is not None) for e in endpoints]
        self.poller = zmq.Poller()
        self._subs: list[zmq.Socket] = []
        self._dealers: dict[int, zmq.Socket] = {}
        self._deadline: dict[int, float] = {}
        self._owner: dict[zmq.Socket, tuple[int, int]] = {}
        try:
            for i, e in enumerate(endpoints):
                s = self.ctx.socket(zmq.SUB)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RCVHWM, 0)     # never drop on our side: the publisher's HWM rules
                s.setsockopt(zmq.SUBSCRIBE, topic.encode())
                try:
                    (s.bind if bind else s.connect)(e.url)
                except zmq.ZMQError as err:
                    s.close()
                    raise ConfigError("kv_events", f"{e.url}: {err}") from None
                self._subs.append(s)
                self._owner[s] = (i, LIVE)
                self.poller.register(s, zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    def bound_urls(self) -> list[str]:
        """The endpoints as bound (`tcp://127.0.0.1:*` resolved to its port)."""
        return [s.getsockopt_string(zmq.LAST_ENDPOINT) for s in self._subs]

    def _request_replay(self, i: int, start: int) -> None:
        d = self._dealers.get(i)
        if d is None:
            d = self.ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.connect(self.endpoints[i].replay_url)
            self._dealers[i] = d
            self._owner[d] = (i, REPLAY)
            self.poller.register(d, zmq.POLLIN)
        d.send_multipart([b"", seq_bytes(start)])
        self._deadline[i] = time.monotonic() + self.replay_timeout_s

    def _drop_dealer(self, i: int) -> None:
        """A replay that timed out: its socket goes, so a late answer to it can never be
        taken for the answer to a later request."""
        d = self._dealers.pop(i, None)
        if d is not None:
            self.poller.unregister(d)
            del self._owner[d]
            d.close(linger=0)
        self._deadline.pop(i, None)

    def poll(self, timeout_ms: int = 0, max_messages: int = 10_000) -> int:
        """Receive and apply what has arrived (waiting up to `timeout_ms` for the first
        message); returns how many messages were handled."""
        handled = 0
        ready = [sock for sock, _ in self.poller.poll(timeout_ms)]
        while ready and handled < max_messages:
            for sock in ready:                 # drain each ready socket: one poll per burst
                owner = self._owner.get(sock)
                while owner is not None and handled < max_messages:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    handled += 1
                    i, kind = owner
                    now = time.time()
                    if self.on_frames is not None:
                        self.on_frames(i, kind, frames, now)
                    self.feed(i, kind, frames, now)
                    owner = self._owner.get(sock)     # a timed-out DEALER may have gone
            ready = [sock for sock, _ in self.poller.poll(0)]
        self._check_deadlines()
        return handled

    def feed(self, i: int, kind: int, frames: list[bytes], now: float) -> None:
        """Apply one received message (from a socket or a recording)."""
        st = self.streams[i]
        if kind == LIVE:
            start = st.on_live(frames, now)
            if start is not None:
                self._request_replay(i, start)
        elif kind == REPLAY:
            if st.on_replay(frames, now):
                self._deadline.pop(i, None)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for i, t in list(self._deadline.items()):
            if now >= t:
                self._drop_dealer(i)
                if self.on_frames is not None:
                    self.on_frames(i, REPLAY_TIMEOUT, [], time.time())
                self.streams[i].finish_replay(timed_out=True)

    def close(self) -> None:
        for i in list(self._dealers):
            self._drop_dealer(i)
        for s in self._subs:
            s.close(linger=0)
        self._subs = []
