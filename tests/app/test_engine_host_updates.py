"""Live updates through the GUI's engine host: every Update sent between two steps
reaches the engine, so the engine runs with the config the host reports. Qt-free: the host is driven directly."""

from __future__ import annotations

from app.serving import messages as m
from app.serving.engine_host import EngineHost, default_simulation_factory


def test_updates_between_steps_all_reach_the_engine(gui_config):
    sent = []
    host = EngineHost(gui_config(policy="h2o", budget=0.5), default_simulation_factory, sent.append)
    host.iterate()                                   # builds the engine
    host.command(m.Update({"max_num_seqs": 2}))
    host.command(m.Update({"budget": 0.25}))
    host.command(m.Step(1))
    host.iterate()
    engine = host.sim.engine
    assert engine.config.scheduler.max_num_seqs == 2 and engine.config.selection.budget == 0.25
    # the host's engines profile for the Kernels view; apart from that the configs agree
    assert engine.config.replace(profile=False).to_dict() == host.config.to_dict()
