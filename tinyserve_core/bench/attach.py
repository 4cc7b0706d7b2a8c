"""Attach benchmarks (`tinyserve bench attach`): how fast the subscriber decodes and
applies a server's KV events with nothing dropped, the latency from publish to the
block being in the model, and what a live block costs in memory at a million blocks.

The publisher is a thread of this process sending pre-encoded vLLM-format batches over
TCP loopback (both sides share the machine's cores, as a GUI beside a local server
would); "nothing dropped" is checked, not assumed: no sequence gap, every block
accounted for. Every figure is measured here; the JSON records the machine."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import msgspec
import numpy as np
import zmq

from ..attach.cache_model import CacheModel
from ..attach.subscriber import Endpoint, Subscriber
from ..attach.wire import DecodedBatch
from ..observe.kv_event_wire import BlockRemoved, BlockStored, EventBatch, seq_bytes
from .machine import cpu_model


def _batches(n_batches: int, chains: int, chain_len: int, block_size: int, seed: int,
             live_cap: int) -> tuple[list[bytes], int]:
    """Payloads of a serving-like stream: each batch stores `chains` chains (half of them
    branching off an earlier chain) and removes the oldest blocks beyond `live_cap`.
    Returns (payloads, block events)."""
    rng = np.random.default_rng(seed)
    enc = msgspec.msgpack.Encoder()
    live: list[int] = []
    next_hash = 1
    out, block_events = [], 0
    for _ in range(n_batches):
        events = []
        for _ in range(chains):
            parent = int(live[rng.integers(len(live))]) if live and rng.random() < 0.5 else None
            hashes = list(range(next_hash, next_hash + chain_len))
            next_hash += chain_len
            toks = rng.integers(0, 32000, chain_len * block_size).tolist()
            events.append(BlockStored(block_hashes=hashes, parent_block_hash=parent, token_ids=toks,
                                      block_size=block_size, lora_id=None, medium="GPU", lora_name=None))
            live.extend(hashes)
            block_events += chain_len
        if len(live) > live_cap:
            drop, live = live[:len(live) - live_cap], live[len(live) - live_cap:]
            events.append(BlockRemoved(block_hashes=drop, medium="GPU"))
            block_events += len(drop)
        out.append(enc.encode(EventBatch(0.0, events, 0)))
    return out, block_events


def _pub_sub(ctx: zmq.Context, model: CacheModel):
    pub = ctx.socket(zmq.XPUB)          # XPUB: wait for the subscription instead of sleeping
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    sub = Subscriber([Endpoint(pub.getsockopt_string(zmq.LAST_ENDPOINT))], model, context=ctx)
    if not pub.poll(10_000):
        raise RuntimeError("the subscriber never connected")
    pub.recv()
    return pub, sub


def throughput(n_batches: int = 2000, chains: int = 8, chain_len: int = 16, block_size: int = 16,
               seed: int = 0, live_cap: int = 50_000) -> dict:
    """Sustained block events per second decoded and applied (publisher flat out)."""
    payloads, block_events = _batches(n_batches, chains, chain_len, block_size, seed, live_cap)
    ctx = zmq.Context()
    model = CacheModel()
    pub, sub = _pub_sub(ctx, model)

    def send():
        for i, p in enumerate(payloads):
            pub.send_multipart([b"", seq_bytes(i), p])
    t = threading.Thread(target=send, daemon=True)
    t0 = time.perf_counter()
    t.start()
    st = sub.streams[0].stats
    deadline = time.monotonic() + 600
    while st.batches + st.malformed < n_batches and time.monotonic() < deadline:
        sub.poll(100)
    dt = time.perf_counter() - t0
    t.join()
    sub.close()
    pub.close(0)
    ctx.term()
    applied = model.stored + model.removed
    return {"batches": n_batches, "block_events": block_events, "seconds": dt,
            "block_events_per_s": block_events / dt, "batches_per_s": n_batches / dt,
            "gaps": st.gaps, "malformed": st.malformed,
            "dropped": block_events - applied, "blocks_live": model.blocks_live}


def latency(n_batches: int = 2000, rate: float = 500.0, chain_len: int = 16, seed: int = 1) -> dict:
    """Publish-to-applied latency at a steady `rate` batches/s (one chain per batch):
    ts stamped just before send, read when the batch has been applied."""
    rng = np.random.default_rng(seed)
    enc = msgspec.msgpack.Encoder()
    ctx = zmq.Context()
    model = CacheModel()
    pub, sub = _pub_sub(ctx, model)
    lat: list[float] = []
    sub.streams[0].on_applied = lambda seq, b, r: lat.append(time.time() - b.ts)

    def send():
        start = time.perf_counter()
        for i in range(n_batches):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            hashes = list(range(i * chain_len + 1, (i + 1) * chain_len + 1))
            ev = BlockStored(block_hashes=hashes, parent_block_hash=None,
                             token_ids=rng.integers(0, 32000, chain_len * 16).tolist(), block_size=16,
                             lora_id=None, medium="GPU", lora_name=None)
            pub.send_multipart([b"", seq_bytes(i), enc.encode(EventBatch(time.time(), [ev], 0))])
    t = threading.Thread(target=send, daemon=True)
    t.start()
    deadline = time.monotonic() + n_batches / rate + 60
    while len(lat) < n_batches and time.monotonic() < deadline:
        sub.poll(5)
    t.join()
    sub.close()
    pub.close(0)
    ctx.term()
    a = np.array(lat) * 1e3
    return {"batches": n_batches, "rate_per_s": rate, "p50_ms": float(np.percentile(a, 50)),
            "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()),
            "gaps": sub.streams[0].stats.gaps}


def memory(num_blocks: int = 1_000_000, chain_len: int = 16, block_size: int = 16, seed: int = 2) -> dict:
    """Bytes per live block at `num_blocks` live (tracemalloc sees numpy's arrays too),
    token ids kept up to the model's cap; plus the cost of the views' snapshot
    (`block_map()`, median of 5) and of the summary's forest counts."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, 32000, chain_len * block_size).tolist()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model = CacheModel()
    enc = msgspec.msgpack.Encoder()
    raw_toks = msgspec.Raw(enc.encode(toks))       # token ids as the fast decoder leaves them
    chains_per_batch = 8
    for start in range(0, num_blocks, chain_len * chains_per_batch):
        events = []
        for c in range(start, min(start + chain_len * chains_per_batch, num_blocks), chain_len):
            # spread-out 63-bit hashes cost what a server's do (small ints are shared objects)
            hashes = [h * 0x9E3779B97F4A7C15 % (1 << 63) for h in range(c + 1, min(c + chain_len, num_blocks) + 1)]
            events.append(BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=raw_toks,
                                      block_size=block_size, lora_id=None, medium="GPU", lora_name=None))
        model.apply(DecodedBatch(0.0, events, 0), 0)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    times = []
    for _ in range(5):              # median of 5: the first call also faults fresh pages in
        t = time.perf_counter()
        bm = model.block_map()
        times.append(time.perf_counter() - t)
    snap_ms = float(np.median(times)) * 1e3
    t = time.perf_counter()
    roots, depth = model.forest_counts()
    forest_ms = (time.perf_counter() - t) * 1e3
    return {"blocks_live": model.blocks_live, "bytes": used, "bytes_per_block": used / model.blocks_live,
            "token_blocks_kept": model.token_blocks, "block_map_ms": snap_ms,
            "forest_counts_ms": forest_ms, "max_chain_depth": depth, "map_cells": len(bm)}


