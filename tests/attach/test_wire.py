"""The shapes servers have used decode the same; junk is counted, never fatal."""

from __future__ import annotations

import msgspec
import pytest

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.subscriber import Endpoint, Stream
from tinyserve_core.attach.wire import BlockStored, PayloadError, decode_payload
from tinyserve_core.observe.kv_event_wire import END_SEQ, seq_bytes

from .publisher import payload, removed, stored

enc = msgspec.msgpack.encode


def test_our_encoding_is_vllms_array_batch_with_tagged_map_events():
    raw = msgspec.msgpack.decode(payload([stored([1, 2], parent=b"\x07")], ts=5.0, rank=1))
    assert raw[0] == 5.0 and raw[2] == 1
    ev = raw[1][0]
    assert ev["type"] == "BlockStored" and ev["parent_block_hash"] == b"\x07"
    assert {"block_hashes", "token_ids", "block_size", "lora_id", "medium", "lora_name"} <= set(ev)


@pytest.mark.parametrize("body", [
    # older vLLM: events as arrays, the tag first; no lora_name
    [1.0, [["BlockStored", [1, 2], None, [9, 9, 9, 9], 2, None, "GPU"], ["BlockRemoved", [1], "GPU"]]],
    # newer vLLM: the batch as a map; events with fields this version does not know
    {"ts": 1.0, "data_parallel_rank": 0, "events": [
        {"type": "BlockStored", "block_hashes": [1, 2], "parent_block_hash": None, "token_ids": [9, 9, 9, 9],
         "block_size": 2, "lora_id": None, "medium": "GPU", "lora_name": None, "kv_cache_spec_kind": "full",
         "brand_new_field": {"x": 1}},
        {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU", "group_idx": 0}]},
])
def test_other_server_shapes(body):
    b = decode_payload(enc(body))
    assert [type(e).__name__ for e in b.events] == ["BlockStored", "BlockRemoved"]
    assert isinstance(b.events[0], BlockStored) and b.events[0].token_ids == [9, 9, 9, 9]
    m = CacheModel()
    m.apply(b, 0)
    assert m.blocks_live == 1 and m.tokens(int(m.block_map().slot[0])) == (9, 9)


@pytest.mark.parametrize("junk", [b"\xc1", enc("a string"), enc([1.0]), enc(["x", [], None]),
                                  enc({"ts": 1.0, "events": 3})])
def test_not_a_batch(junk):
    with pytest.raises(PayloadError):
        decode_payload(junk)


def test_unknown_and_bad_events_do_not_cost_the_batch():
    b = decode_payload(enc([1.0, [{"type": "BlockPinned"}, 42, {"type": "BlockRemoved", "medium": "GPU"},
                                  {"type": "BlockRemoved", "block_hashes": [3], "medium": "GPU"}]]))
    assert (b.other, b.malformed_events, len(b.events)) == (1, 2, 1)


def test_stream_takes_vllms_three_frame_replay_replies():
    m = CacheModel()
    st = Stream(Endpoint("tcp://h:1", "tcp://h:2"), m, can_replay=True)
    assert st.on_live([b"", seq_bytes(2), payload([stored([3])])], 0.0) == 0     # late join: ask from 0
    st.on_replay([b"", seq_bytes(0), payload([stored([1])])], 0.0)              # vLLM: no topic frame
    st.on_replay([b"", b"", seq_bytes(1), payload([removed([1])])], 0.0)        # the issue's: with topic
    assert st.on_replay([b"", END_SEQ, b""], 0.0)
    assert (st.stats.batches, st.stats.replayed_batches, m.blocks_live) == (3, 2, 1)
    assert st.on_live([b"", seq_bytes(2), payload([stored([3])])], 0.0) is None  # a duplicate
    assert st.stats.duplicates == 1
