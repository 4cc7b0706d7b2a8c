"""The KV-cache event wire format of vLLM (`vllm/distributed/kv_events.py`), which
SGLang follows: msgspec Structs, so our publisher encodes exactly what a consumer
written for vLLM decodes, and `tinyserve_core.attach.wire` decodes servers with them.

Framing (one ZMQ message per batch): `topic`, `seq` (8 bytes big-endian, per
publisher, from 0), `payload` = msgpack of `EventBatch`, an array
`[ts, events, data_parallel_rank]` (the rank omitted when None). Events are maps tagged
with `"type"`. Replay: a DEALER sends `[b"", start_seq]` to the publisher's ROUTER and
gets `[b"", topic, seq, payload]` per buffered batch, then `[b"", b"", END_SEQ, b""]`.

These live in `observe` (below `attach`) because the engine's publisher encodes them."""

from __future__ import annotations

from typing import Any

import msgspec

BlockHash = int | bytes       # vLLM's ExternalBlockHash: int64 or the raw digest bytes
END_SEQ = (-1).to_bytes(8, "big", signed=True)
MEDIUM_GPU = "GPU"


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


def seq_from_bytes(frame: bytes) -> int:
    """The sequence number of a frame; ValueError unless it is exactly 8 bytes."""
    if len(frame) != 8:
        raise ValueError(f"sequence frame has {len(frame)} bytes, not 8")
    return int.from_bytes(frame, "big", signed=True)


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base of the tagged events: the tag is the class name under the key "type"."""


class BlockStored(KVCacheEvent):
    """A chain of full blocks: block_hashes[0]'s parent is parent_block_hash, each next
    hash's parent the one before; token_ids holds block_size tokens per hash."""
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: Any = None
    ownership: Any = None
    session_id: Any = None
    lookahead_token_ids: list[int] | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[BlockHash]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared
EVENT_TYPES: tuple[type, ...] = (BlockStored, BlockRemoved, AllBlocksCleared)


class KVEventBatch(EventBatch):
    events: list[KVEvent]
