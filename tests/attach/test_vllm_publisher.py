"""vLLM's own ZmqEventPublisher, when vllm is importable: attach reads what it sends."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.vllm


def test_vllm_publisher_is_read():
    kv_events = pytest.importorskip("vllm.distributed.kv_events")
    from tinyserve_core.attach.cache_model import CacheModel
    from tinyserve_core.attach.subscriber import Endpoint, Subscriber

    import socket
    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    pub = kv_events.ZmqEventPublisher(0, endpoint=f"tcp://*:{ports[0]}",
                                      replay_endpoint=f"tcp://*:{ports[1]}")
    model = CacheModel()
    sub = Subscriber([Endpoint(f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")], model)
    try:
        time.sleep(0.5)
        fields = dict(block_hashes=[1, 2], parent_block_hash=None, token_ids=[1, 2, 3, 4],
                      block_size=2, lora_id=None, medium="GPU")
        if "lora_name" in kv_events.BlockStored.__struct_fields__:
            fields["lora_name"] = None
        pub.publish(kv_events.KVEventBatch(ts=time.time(), events=[kv_events.BlockStored(**fields)]))
        end = time.monotonic() + 10
        while model.blocks_live < 2:
            assert time.monotonic() < end
            sub.poll(50)
        assert model.forest_counts() == (1, 2)
    finally:
        sub.close()
        pub.shutdown()
