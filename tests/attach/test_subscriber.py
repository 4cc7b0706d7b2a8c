"""The subscriber against a publisher that follows vLLM's format frame for frame."""

from __future__ import annotations

import time

import msgspec
import pytest

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.session import Attachment
from tinyserve_core.attach.subscriber import Endpoint, Subscriber, expand_endpoints, offset_port
from tinyserve_core.errors import ConfigError

from .publisher import cleared, payload, removed, stored


def pump(sub, until, timeout_s=5.0):
    end = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < end, "timed out"
        sub.poll(20)


def attach(pub, model=None, **kw):
    sub = Subscriber([Endpoint(pub.url, pub.replay_url, pub.rank)], model or CacheModel(), **kw)
    pub.wait_subscriber()
    return sub


def test_chains_branches_removals_and_clear(make_pub):
    pub = make_pub()
    model = CacheModel()
    sub = attach(pub, model)
    st = sub.streams[0]
    pub.send([stored([1, 2, 3])])                    # a chain of three
    pub.send([stored([4, 5], parent=2)])             # a branch sharing blocks 1-2
    pump(sub, lambda: st.stats.batches == 2)
    assert model.blocks_live == 5
    assert model.forest_counts() == (1, 4)           # one tree, 1-2-4-5 deepest
    bm = model.block_map()
    assert sorted(bm.depth.tolist()) == [1, 2, 3, 3, 4]
    assert len(set(bm.root.tolist())) == 1
    pub.send([removed([2])])                         # the shared block goes: two trees + root 1
    pump(sub, lambda: st.stats.batches == 3)
    assert model.blocks_live == 4
    assert model.forest_counts() == (3, 2)           # roots 1, 3, 4; 4-5 is the deepest
    pub.send([stored([1])])                          # a re-store of a live hash is a reuse
    pump(sub, lambda: st.stats.batches == 4)
    assert model.reused == 1 and model.blocks_live == 4
    pub.send([cleared()])
    pump(sub, lambda: st.stats.batches == 5)
    assert model.blocks_live == 0
    assert model.events == {"BlockStored": 3, "BlockRemoved": 1, "AllBlocksCleared": 1, "other": 0}
    assert st.stats.gaps == 0 and st.stats.malformed == 0
    sub.close()


def test_int_and_bytes_hashes_and_tokens(make_pub):
    pub = make_pub()
    model = CacheModel()
    sub = attach(pub, model)
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    pub.send([stored([h1, h2], tokens=[10, 11, 12, 13]), stored([7], parent=h2, tokens=[14, 15]),
              stored([-5], medium="CPU")])
    pump(sub, lambda: sub.streams[0].stats.batches == 1)
    assert model.blocks_live == 4 and model.live_by_medium() == {"GPU": 3, "CPU": 1}
    bm = model.block_map()
    leaf = int(bm.slot[bm.depth == 3][0])
    assert model.detail(leaf).block_hash == 7 and model.detail(leaf).parent_hash == h2
    assert model.chain_tokens(leaf) == [10, 11, 12, 13, 14, 15]
    pub.send([removed([h1]), removed([-5], medium="CPU")])
    pump(sub, lambda: sub.streams[0].stats.batches == 2)
    assert model.blocks_live == 2 and model.forest_counts() == (1, 2)
    sub.close()


def test_two_ranks_clear_only_their_own(make_pub):
    p0, p1 = make_pub(rank=0), make_pub(rank=1)
    model = CacheModel()
    sub = Subscriber([Endpoint(p0.url, None, 0), Endpoint(p1.url, None, 1)], model)
    p0.wait_subscriber()
    p1.wait_subscriber()
    p0.send([stored([1, 2])])
    p1.send([stored([1, 2, 3])])                     # same hashes, other rank: other blocks
    pump(sub, lambda: sum(s.stats.batches for s in sub.streams) == 2)
    assert model.live_by_rank() == {0: 2, 1: 3}
    p1.send([cleared()])
    pump(sub, lambda: sub.streams[1].stats.batches == 2)
    assert model.live_by_rank() == {0: 2, 1: 0}
    sub.close()


def test_late_join_is_recovered_by_replay(make_pub):
    pub = make_pub()
    for h in (1, 2, 3):                              # published before anyone listened
        pub.send([stored([h], parent=h - 1 if h > 1 else None)], deliver=False)
    model = CacheModel()
    sub = attach(pub, model)
    pub.send([stored([4], parent=3)])                # seq 3: the first one seen
    pump(sub, lambda: sub._deadline)                 # a replay request went out
    assert pub.serve_replay() == 0
    pump(sub, lambda: sub.streams[0].stats.state == "live")
    s = sub.streams[0].stats
    assert (s.batches, s.replayed_batches, s.duplicates) == (4, 3, 0)
    assert model.blocks_live == 4 and model.forest_counts() == (1, 4)
    sub.close()


def test_gap_waits_for_replay_and_duplicates_drop(make_pub):
    pub = make_pub()
    model = CacheModel()
    sub = attach(pub, model)
    pub.send([stored([1])])
    pub.send([removed([1])], deliver=False)          # lost on the way
    pub.send([stored([1])])                          # seq 2 must wait for seq 1
    pump(sub, lambda: sub._deadline)
    assert model.blocks_live == 1 and model.reused == 0   # seq 2 not applied early
    pub.serve_replay()                               # answers seq 1 and 2 (2 is a duplicate)
    pump(sub, lambda: not sub.streams[0].replaying)
    s = sub.streams[0].stats
    assert (s.batches, s.gaps, s.replayed_batches) == (3, 1, 1)
    assert model.blocks_live == 1 and model.reused == 0 and model.removed == 1
    sub.close()


def test_replay_that_never_answers_times_out_and_live_goes_on(make_pub):
    pub = make_pub()
    model = CacheModel()
    sub = attach(pub, model, replay_timeout_s=0.3)
    pub.send([stored([1])])
    pub.send([stored([2], parent=1)], deliver=False)
    pub.send([stored([3])])                          # gap: asks, nobody answers
    pump(sub, lambda: sub.streams[0].stats.replay_timeouts == 1)
    pub.send([stored([4])])
    pump(sub, lambda: sub.streams[0].stats.batches == 3)
    s = sub.streams[0].stats
    assert s.state == "live" and s.gaps == 1 and model.blocks_live == 3
    sub.close()


def test_junk_is_counted_and_skipped(make_pub):
    pub = make_pub(replay=False)
    model = CacheModel()
    sub = attach(pub, model)
    pub.send_frames([b"just one frame"])
    pub.send_frames([b"", b"short", payload([stored([9])])])       # seq not 8 bytes
    pub.send([], raw=b"\xc1 not msgpack")                          # seq 0, bad payload
    pub.send([], raw=msgspec.msgpack.encode([1.0, [{"type": "BlockPinned", "x": 1},
                                                    {"type": "BlockStored", "block_hashes": "bad"}]]))
    pub.send([stored([1, 2])])
    pump(sub, lambda: sub.streams[0].stats.last_seq == 2)
    s = sub.streams[0].stats
    assert s.malformed == 4                       # one frame, bad seq, not msgpack, bad event
    assert s.batches == 2 and s.gaps == 0 and s.other_types == {"BlockPinned": 1}
    assert model.events["other"] == 1 and model.blocks_live == 2
    sub.close()


def test_topic_filter_and_bind(ctx):
    import zmq
    model = CacheModel()
    sub = Subscriber([Endpoint("tcp://127.0.0.1:*")], model, topic="kv", bind=True, context=ctx)
    url = sub.bound_urls()[0]
    pub = ctx.socket(zmq.PUB)
    pub.connect(url)
    from tinyserve_core.observe.kv_event_wire import seq_bytes
    deadline = time.monotonic() + 5
    seq = 0
    while model.blocks_live == 0:                 # connect-side PUB: resend until joined
        assert time.monotonic() < deadline
        pub.send_multipart([b"other", seq_bytes(0), payload([stored([100])])])
        pub.send_multipart([b"kv", seq_bytes(seq), payload([stored([seq + 1])])])
        seq += 1
        sub.poll(20)
    assert model.detail(int(model.block_map().slot[0])).block_hash != 100
    pub.close(0)
    sub.close()


def test_data_parallel_expansion():
    assert offset_port("tcp://10.0.0.5:5557", 2) == "tcp://10.0.0.5:5559"
    eps = expand_endpoints(["tcp://h:5557", "tcp://g:6000"], ["tcp://h:5558"], 2)
    assert [(e.url, e.replay_url, e.rank) for e in eps] == [
        ("tcp://h:5557", "tcp://h:5558", 0), ("tcp://h:5558", "tcp://h:5559", 1),
        ("tcp://g:6000", None, 0), ("tcp://g:6001", None, 1)]
    with pytest.raises(ConfigError, match="replay"):
        expand_endpoints(["tcp://h:1"], ["tcp://h:2", "tcp://h:3"], 1)
    with pytest.raises(ConfigError, match="port"):
        offset_port("tcp://h", 1)


def test_attachment_summary_keys(make_pub):
    pub = make_pub()
    att = Attachment([Endpoint(pub.url, pub.replay_url, 0)])
    pub.wait_subscriber()
    pub.send([stored([1, 2]), stored([3], parent=1)])
    pump(att.subscriber, lambda: att.model.blocks_live == 3)
    s = att.summary()
    att.close()
    assert list(s) == ["endpoints", "batches", "events", "malformed", "gaps", "replayed_batches",
                       "blocks_live", "tree_roots", "max_chain_depth", "by_rank", "by_medium", "metrics"]
    assert s["by_rank"] == {"0": {"batches": 1, "blocks_live": 3}}
    assert (s["tree_roots"], s["max_chain_depth"], s["by_medium"]) == (1, 2, {"GPU": 3})
