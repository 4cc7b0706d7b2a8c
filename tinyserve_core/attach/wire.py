"""Decoding KV-event payloads leniently: one server's newer or older encoding, an
unknown event type or an unknown field must never cost the rest of a batch.

The fast path decodes the whole payload straight into the Structs of
`observe.kv_event_wire`. When that fails, the payload is decoded untyped and each
event is dispatched by its tag, accepting the shapes servers have used: the batch as
an array or a map (`{"ts", "events", "data_parallel_rank"}`), each event as a map
tagged `"type"` or an array whose first element is the tag (older vLLM), optional
fields missing. Unknown tags are counted as `other`; an event of a known type that
does not fit its schema is counted as malformed, and the batch goes on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..observe.kv_event_wire import (EVENT_TYPES, AllBlocksCleared, BlockRemoved, BlockStored,
                                     KVEvent, KVEventBatch)



class StoredIn(BlockStored, tag="BlockStored"):
    """BlockStored as the fast path decodes it: token ids left as their msgpack bytes
    (most of a payload; a view decodes the few it shows, on demand)."""
    token_ids: msgspec.Raw


class _BatchIn(KVEventBatch):
    events: list[StoredIn | BlockRemoved | AllBlocksCleared]


_FAST = msgspec.msgpack.Decoder(_BatchIn)
_ANY = msgspec.msgpack.Decoder()
_BY_TAG: dict[str, type] = {t.__name__: t for t in EVENT_TYPES}
# fields a server may leave out (older vLLM had no lora_name, SGLang may omit medium)
_OPTIONAL_DEFAULTS = {"lora_id": None, "medium": None, "lora_name": None}


class PayloadError(ValueError):
    """The payload is not an event batch at all (counted as one malformed frame)."""


@dataclass(slots=True)
class DecodedBatch:
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None
    other: int = 0                    # events of a type this version does not know
    malformed_events: int = 0         # known type, wrong shape: skipped
    other_types: dict[str, int] = field(default_factory=dict)


def decode_payload(payload: bytes) -> DecodedBatch:
    """The events of one payload; PayloadError when it is not a batch."""
    try:
        b = _FAST.decode(payload)
        return DecodedBatch(b.ts, b.events, b.data_parallel_rank)
    except msgspec.DecodeError:
        pass    # ValidationError is a DecodeError: fall back to the lenient path
    try:
        raw = _ANY.decode(payload)
    except msgspec.DecodeError as e:
        raise PayloadError(f"not msgpack: {e}") from None
    ts, events, rank = _batch_fields(raw)
    out = DecodedBatch(ts, [], rank)
    for item in events:
        _add_event(out, item)
    return out


def _batch_fields(raw: Any) -> tuple[float, list, int | None]:
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, (list, tuple)) and 2 <= len(raw) <= 3:
        ts, events = raw[0], raw[1]
        rank = raw[2] if len(raw) == 3 else None
    else:
        raise PayloadError("not an event batch: expected [ts, events, rank?]")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise PayloadError(f"ts: expected a number, got {type(ts).__name__}")
    if not isinstance(events, list):
        raise PayloadError(f"events: expected a list, got {type(events).__name__}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise PayloadError(f"data_parallel_rank: expected an int, got {type(rank).__name__}")
    return float(ts), events, rank


def _add_event(out: DecodedBatch, item: Any) -> None:
    if isinstance(item, dict):
        tag = item.get("type")
        fields = {k: v for k, v in item.items() if k != "type"}
    elif isinstance(item, (list, tuple)) and item and isinstance(item[0], str):
        tag = item[0]
        cls = _BY_TAG.get(tag)
        fields = dict(zip(cls.__struct_fields__, item[1:])) if cls else {}
    else:
        out.malformed_events += 1
        return
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        out.other += 1
        name = tag if isinstance(tag, str) else "?"
        out.other_types[name] = out.other_types.get(name, 0) + 1
        return
    if cls is not AllBlocksCleared:
        for k, v in _OPTIONAL_DEFAULTS.items():
            if k in cls.__struct_fields__:
                fields.setdefault(k, v)
    try:
        out.events.append(msgspec.convert(fields, cls))
    except msgspec.ValidationError:
        out.malformed_events += 1


__all__ = ["AllBlocksCleared", "BlockRemoved", "BlockStored", "DecodedBatch", "PayloadError",
           "StoredIn", "decode_payload"]
