"""The GUI's engine publishes its KV events (config `kv_events`): a subscriber sees the
blocks it caches, a reset says AllBlocksCleared, turning the option off closes it."""

from __future__ import annotations

import time

from app.serving import messages as m
from app.serving.engine_host import EngineHost, default_simulation_factory
from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.session import Attachment
from tinyserve_core.attach.subscriber import Endpoint


def test_engine_host_publishes_kv_events(gui_config):
    sent = []
    cfg = gui_config(kv_events="tcp://127.0.0.1:*", kv_events_replay="tcp://127.0.0.1:*")
    host = EngineHost(cfg, default_simulation_factory, sent.append)
    host.iterate()                                   # builds the engine and the publisher
    pub = host.kv_publisher
    assert pub is not None and pub.block_size == 4
    att = Attachment([Endpoint(pub.endpoint, pub.replay_endpoint, 0)], model=CacheModel())
    time.sleep(0.3)                                  # the subscription reaches the PUB socket
    host.command(m.Step(12))
    for _ in range(40):
        host.iterate()
    end = time.monotonic() + 10
    while att.model.events["BlockStored"] == 0 and time.monotonic() < end:
        att.poll(50)
    assert att.model.blocks_live > 0 and att.streams[0].stats.malformed == 0

    host.command(m.Reset(None))                      # same endpoints: same publisher, cache cleared
    host.iterate()
    assert host.kv_publisher is pub
    end = time.monotonic() + 10
    while att.model.events["AllBlocksCleared"] == 0 and time.monotonic() < end:
        att.poll(50)
    assert att.model.blocks_live == 0

    host.command(m.Update({"kv_events": None, "kv_events_replay": None}))
    assert host.kv_publisher is None
    att.close()
    host.command(m.Quit())
