"""A test publisher that follows vLLM's KV-event format frame for frame: the msgspec
Structs of the wire module (EventBatch array-like, events tagged "type"), the three
frames topic | seq (8 bytes big-endian) | payload, and the ROUTER replay protocol.

It uses XPUB rather than PUB (identical on the wire for subscribers) so a test can
wait for the subscription to arrive instead of sleeping: ZMQ drops what a PUB sends
before a subscriber's subscription has reached it."""

from __future__ import annotations

import time

import msgspec
import zmq

from tinyserve_core.observe.kv_event_wire import (END_SEQ, AllBlocksCleared, BlockRemoved, BlockStored,
                                                  EventBatch, seq_bytes)

ENC = msgspec.msgpack.Encoder()


def stored(hashes, parent=None, block_size=2, medium="GPU", tokens=None):
    tokens = list(range(len(hashes) * block_size)) if tokens is None else tokens
    return BlockStored(block_hashes=list(hashes), parent_block_hash=parent, token_ids=tokens,
                       block_size=block_size, lora_id=None, medium=medium, lora_name=None)


def removed(hashes, medium="GPU"):
    return BlockRemoved(block_hashes=list(hashes), medium=medium)


def cleared():
    return AllBlocksCleared()


def payload(events, ts=None, rank=None) -> bytes:
    return ENC.encode(EventBatch(time.time() if ts is None else ts, list(events), rank))


class TestPublisher:
    __test__ = False          # not a test class

    def __init__(self, ctx: zmq.Context, topic: bytes = b"", rank: int = 0, replay: bool = True):
        self.topic = topic
        self.rank = rank
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:*")
        self.url = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = None
        self.replay_url = None
        if replay:
            self.router = ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.bind("tcp://127.0.0.1:*")
            self.replay_url = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seq = 0
        self.buffer: list[tuple[int, bytes]] = []

    def wait_subscriber(self, timeout_s: float = 5.0) -> None:
        if not self.pub.poll(int(timeout_s * 1000)):
            raise TimeoutError("no subscriber")
        self.pub.recv()

    def send(self, events, *, ts=None, deliver=True, raw: bytes | None = None) -> int:
        """Publish the next batch; `deliver=False` only buffers it (a lost message)."""
        seq = self.seq
        self.seq += 1
        body = raw if raw is not None else payload(events, ts, self.rank)
        self.buffer.append((seq, body))
        if deliver:
            self.pub.send_multipart([self.topic, seq_bytes(seq), body])
        return seq

    def send_frames(self, frames: list[bytes]) -> None:
        self.pub.send_multipart(frames)

    def serve_replay(self, timeout_s: float = 5.0) -> int:
        """Answer one replay request; returns its start seq."""
        if not self.router.poll(int(timeout_s * 1000)):
            raise TimeoutError("no replay request")
        ident, empty, start = self.router.recv_multipart()
        start_seq = int.from_bytes(start, "big")
        for seq, body in self.buffer:
            if seq >= start_seq:
                self.router.send_multipart([ident, b"", self.topic, seq_bytes(seq), body])
        self.router.send_multipart([ident, b"", b"", END_SEQ, b""])
        return start_seq

    def close(self) -> None:
        self.pub.close(0)
        if self.router is not None:
            self.router.close(0)
