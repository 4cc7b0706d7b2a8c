"""Our engine publishes vLLM-format KV events; attach reads them and holds exactly the
blocks the engine's prefix cache holds."""

from __future__ import annotations

import time

import zmq

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.subscriber import Endpoint, Subscriber
from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.simulate import Simulation
from tinyserve_core.observe.kv_event_publisher import KVEventPublisher, int64_hash
from tinyserve_core.errors import ConfigError

import pytest


def _sim(tiny_model_dir=None):
    cfg = EngineConfig.from_dict(dict(
        block_size=4, num_blocks=48, requests=24, rate=50.0, prompt_len=24, prompt_len_max=40,
        output_len=6, shared_prefix_frac=0.7, shared_prefix_len=16, num_prefix_groups=2, seed=3,
        kv_events="tcp://127.0.0.1:*", kv_events_replay="tcp://127.0.0.1:*",
        **({"model": str(tiny_model_dir)} if tiny_model_dir else {})))
    return cfg, Simulation(cfg)


def test_simulate_publishes_what_the_prefix_cache_holds(tiny_model_dir):
    cfg, sim = _sim(tiny_model_dir)
    pub = KVEventPublisher(cfg.output.kv_events, cfg.output.kv_events_replay, block_size=4)
    model = CacheModel()
    sub = Subscriber([Endpoint(pub.endpoint, pub.replay_endpoint)], model, replay_timeout_s=3)
    time.sleep(0.3)               # let the subscription reach the PUB (a late join replays anyway)
    pool = sim.engine.block_manager.pool
    evictions = 0
    while not sim.done:
        rec = sim.step()
        evictions += sum(e.kind == "evict" for e in rec.events)
        pub.add(rec)
        deadline = time.monotonic() + 5
        st = sub.streams[0]
        while st.stats.last_seq is None and pub.batches or st.replaying \
                or (st.stats.last_seq or 0) + 1 < pub.batches:
            assert time.monotonic() < deadline
            sub.poll(20)
        assert model.blocks_live == len(pool.cached_blocks)
    assert evictions > 0 and model.removed > 0      # the run exercised removals too
    live = {model.detail(int(s)).block_hash for s in model.block_map().slot}
    assert live == {int64_hash(h) for h in pool.cached_blocks}
    assert model.forest_counts()[1] >= 4             # shared prefixes make chains
    sub.close()
    pub.close()


def test_engine_config_validates_endpoints():
    with pytest.raises(ConfigError, match="kv_events"):
        EngineConfig.from_dict({"kv_events": "http://x"})
    with pytest.raises(ConfigError, match="kv_events_replay"):
        EngineConfig.from_dict({"kv_events_replay": "tcp://*:5558"})


def test_publisher_replays_while_idle():
    pub = KVEventPublisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", block_size=4)
    from tinyserve_core.observe.kv_event_wire import BlockRemoved
    for i in range(3):
        pub.publish([BlockRemoved(block_hashes=[i], medium="GPU")])
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.connect(pub.replay_endpoint)
    d.send_multipart([b"", (1).to_bytes(8, "big")])
    got = []
    while True:
        assert d.poll(3000)
        f = d.recv_multipart()
        seq = int.from_bytes(f[2], "big", signed=True)
        if seq == -1:
            break
        got.append(seq)
    assert got == [1, 2]
    d.close(0)
    pub.close()


def test_simulate_flag_publishes_and_attach_records_it(tiny_model_dir, tmp_path, capsys):
    """`tinyserve simulate --kv-events` while a subscriber that bound first listens
    (our publisher connects to a concrete host, as vLLM's does)."""
    import threading

    from tinyserve_core.cli import main
    model = CacheModel()
    sub = Subscriber([Endpoint("tcp://127.0.0.1:*")], model, bind=True)
    url = sub.bound_urls()[0]
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            sub.poll(20)
    t = threading.Thread(target=listen)
    t.start()
    try:
        time.sleep(0.3)
        code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu", "--requests", "6",
                     "--rate", "50", "--prompt-len", "24", "--prompt-len-max", "32", "--output-len", "3", "--block-size", "8",
                     "--num-blocks", "64", "--shared-prefix-frac", "1", "--shared-prefix-len", "16",
                     "--kv-events", url])
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
        sub.close()
    assert code == 0
    out = capsys.readouterr().out
    batches = int(out.split("kv events -> ")[1].split("(")[1].split()[0])
    assert batches > 0 and sub.streams[0].stats.batches == batches
    assert model.events["BlockStored"] > 0 and model.forest_counts()[1] >= 2


def test_a_connecting_publisher_loses_neither_its_first_nor_its_last_batch():
    """A PUB socket drops what it sends before a subscription reaches it and, without
    linger, what is still queued when it closes: the publisher (an XPUB) waits for the
    listener's subscription after connecting, and lingers (bounded) when it closes."""
    import threading

    from tinyserve_core.observe.kv_event_wire import BlockRemoved

    for _ in range(3):
        sub = Subscriber([Endpoint("tcp://127.0.0.1:*")], CacheModel(), bind=True)
        stop = threading.Event()

        def listen():   # a live subscriber polls all the time (that is when ZMQ attaches peers)
            while not stop.is_set():
                sub.poll(10)
        t = threading.Thread(target=listen)
        t.start()
        try:
            pub = KVEventPublisher(sub.bound_urls()[0], block_size=8)
            pub.publish([BlockRemoved(block_hashes=[1], medium="GPU")])   # at once after connecting
            pub.publish([BlockRemoved(block_hashes=[2], medium="GPU")])
            pub.close()                                                    # at once after sending
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and sub.streams[0].stats.batches < 2:
                time.sleep(0.01)
        finally:
            stop.set()
            t.join()
            sub.close()
        assert sub.streams[0].stats.batches == 2
