"""Engine events in words, as the event log shows them."""

from __future__ import annotations

from tinyserve_core.observe import events as ev
from tinyserve_core.observe.describe import describe


def test_events_read_as_sentences_that_name_their_blocks_and_requests():
    out = describe(7, [
        ev.Fork(12, 13, (4, 5, 6, 7, 8)), ev.Fork(12, 14, (4, 5, 6, 7, 8)),
        ev.CowCopy(13, 311, 402),
        ev.Evict(77, 0x9F3A1B2C3D4E5F60),
        ev.Preempt("req-8", 8, 6),
        ev.PrefixHit(20, (1, 2, 3), 48),
        ev.Free(9, (5, 4), released=(5,)),
        ev.Schedule("decode", (1, 2), 2),
    ], requests={12: "req-12", 20: "req-20"})
    text = {e.kind: e for e in out}
    assert [e.kind for e in out] == ["fork", "cow_copy", "evict", "preempt", "prefix_hit", "free"]
    assert text["fork"].text.startswith("request req-12 forked into 3 samples sharing 5 blocks")
    assert text["fork"].blocks == (4, 5, 6, 7, 8) and text["fork"].request_id == "req-12"
    assert text["cow_copy"].text.startswith("copy-on-write block 311 -> 402")
    assert text["cow_copy"].blocks == (311, 402)
    assert text["evict"].text == "evicted cached block 77 (hash 9f3a1b2c...)"
    assert text["preempt"].text.startswith("preempted request req-8 (seq 8): no free block")
    assert text["preempt"].seq_id == 8
    assert "seq 20 (req-20) reused 3 cached blocks (48 prompt tokens" in text["prefix_hit"].text
    assert text["free"].text == "seq 9 released 1 block, 1 still shared or cached"
    assert all(e.step == 7 for e in out)
