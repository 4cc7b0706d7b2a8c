"""Our engine's KV-cache events in vLLM's format, so `tinyserve attach` (and any
consumer written for vLLM: routers, indexers) can watch TinyServe.

One batch per engine step that changed the prefix cache: `Cache` events become
`BlockStored` (the chain, its parent, its tokens), `Evict` events `BlockRemoved`;
medium "GPU"; hashes are our 128-bit chained hashes cut to int64 (the low 64 bits,
signed), as vLLM publishes int64 hashes. Frames are topic | seq | payload on a PUB
socket (bound for `tcp://*:PORT`, `ipc://` and `inproc://`, connected for a concrete
host, as vLLM decides), and the last `buffer_steps` batches are kept for replay on a
ROUTER, answered by a thread of its own so replays work while the engine is paused.

It has the interface of the run's other outputs (`add(record)`, `close()`, `abort()`),
so `tinyserve simulate` and the GUI's engine host feed it like a trace writer."""

from __future__ import annotations

import threading
import time
from collections import deque

import msgspec
import zmq

from ..errors import ConfigError
from .events import Cache, Evict
from .kv_event_wire import END_SEQ, MEDIUM_GPU, BlockRemoved, BlockStored, EventBatch, seq_bytes
from .record import StepRecord

_MASK = (1 << 64) - 1


def int64_hash(h: int) -> int:
    """The low 64 bits of a hash as a signed int64 (what msgpack and vLLM carry)."""
    v = h & _MASK
    return v - (1 << 64) if v >= 1 << 63 else v


def _binds(url: str) -> bool:
    return "*" in url or "::" in url or url.startswith(("ipc://", "inproc://"))


def events_of(record: StepRecord, block_size: int) -> list:
    """The vLLM events of one step's records, in the order they happened."""
    out: list = []
    for e in record.events:
        if type(e) is Cache:
            out.append(BlockStored(
                block_hashes=[int64_hash(h) for h in e.block_hashes],
                parent_block_hash=None if e.parent_hash is None else int64_hash(e.parent_hash),
                token_ids=list(e.token_ids), block_size=block_size, lora_id=None,
                medium=MEDIUM_GPU, lora_name=None))
        elif type(e) is Evict:
            if out and type(out[-1]) is BlockRemoved:      # consecutive evictions: one event
                out[-1].block_hashes.append(int64_hash(e.block_hash))
            else:
                out.append(BlockRemoved(block_hashes=[int64_hash(e.block_hash)], medium=MEDIUM_GPU))
    return out


CONNECT_WAIT_S = 1.0     # a listener that is there answers within milliseconds
CLOSE_LINGER_MS = 1000   # bounded: a vanished listener must not hold the run's exit


class KVEventPublisher:
    def __init__(self, endpoint: str, replay_endpoint: str | None = None, *, block_size: int,
                 topic: str = "", buffer_steps: int = 10_000, hwm: int = 100_000,
                 data_parallel_rank: int = 0, context: zmq.Context | None = None):
        self.block_size = block_size
        self.rank = data_parallel_rank
        self._topic = topic.encode()
        self._enc = msgspec.msgpack.Encoder()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._lock = threading.Lock()
        self._seq = 0
        self._ctx = context or zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.set_hwm(hwm)
        self._router = None
        self._stop = threading.Event()
        self._thread = None
        try:
            if _binds(endpoint):
                self._pub.bind(endpoint)
            else:
                self._connect(endpoint)
            self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
            self.replay_endpoint = None
            if replay_endpoint:
                self._router = self._ctx.socket(zmq.ROUTER)
                self._router.setsockopt(zmq.LINGER, 0)
                self._router.bind(replay_endpoint)
                self.replay_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
                self._thread = threading.Thread(target=self._serve, name="tinyserve-kv-replay", daemon=True)
                self._thread.start()
        except zmq.ZMQError as e:
            self._close_sockets()
            raise ConfigError("kv_events", f"{endpoint}: {e}") from None
        self.batches = 0

    def _connect(self, endpoint: str) -> None:
        """Connect and wait (bounded) until the listener that bound has subscribed: a
        publisher drops what it sends before the subscription reaches it, so without the
        wait the run's first batches could be lost to a subscriber that was already there.
        The socket is an XPUB (the same wire as PUB) because only it sees subscriptions."""
        self._pub.connect(endpoint)
        if self._pub.poll(int(CONNECT_WAIT_S * 1000)):
            self._pub.recv()   # the subscription message itself: nothing else needs it

    # -- the run's output interface -------------------------------------------------
    def add(self, record: StepRecord) -> None:
        events = events_of(record, self.block_size)
        if events:
            self.publish(events)

    def publish(self, events: list, ts: float | None = None) -> int:
        """Send one batch now; returns its seq."""
        payload = self._enc.encode(EventBatch(time.time() if ts is None else ts, events, self.rank))
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._buffer.append((seq, payload))
        self._pub.send_multipart([self._topic, seq_bytes(seq), payload])
        self.batches += 1
        return seq

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_sockets()

    abort = close

    # -- replay ----------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._router.poll(100):
                continue
            frames = self._router.recv_multipart()
            if len(frames) != 3 or frames[1] != b"" or len(frames[2]) != 8:
                continue                      # not a replay request: ignore, keep serving
            ident, start = frames[0], int.from_bytes(frames[2], "big", signed=True)
            with self._lock:
                todo = [(s, p) for s, p in self._buffer if s >= start]
            for s, p in todo:
                self._router.send_multipart([ident, b"", self._topic, seq_bytes(s), p])
            self._router.send_multipart([ident, b"", b"", END_SEQ, b""])

    def _close_sockets(self) -> None:
        # the last batches may still be queued: give them a bounded time to leave
        self._pub.close(linger=CLOSE_LINGER_MS)
        if self._router is not None:
            self._router.close(linger=0)
