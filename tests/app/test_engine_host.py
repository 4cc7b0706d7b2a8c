"""The engine host without Qt: commands and messages are typed dataclasses, matched by
type; its engines profile (the Kernels view) while the config it reports keeps the
user's value."""

from __future__ import annotations

import pickle

from app.serving import messages as m
from app.serving.engine_host import EngineHost, default_simulation_factory


def _of(sent, kind):
    return [x for x in sent if isinstance(x, kind)]


def test_host_answers_typed_commands_with_typed_messages(gui_config, tmp_path):
    sent = []
    cfg = gui_config()
    host = EngineHost(cfg, default_simulation_factory, sent.append)
    host.iterate()                                   # builds the engine
    assert _of(sent, m.Ready) and _of(sent, m.StateChanged)[-1].state == "paused"
    assert host.sim.engine.runner.profile and host.sim.engine.config.output.profile
    assert _of(sent, m.ConfigChanged)[-1].config == cfg and not cfg.output.profile

    host.command(m.Step(2))
    host.iterate()
    host.iterate()
    assert _of(sent, m.StepsDone)[-1].n == 2
    snap = _of(sent, m.SnapshotReady)[-1].snapshot
    assert snap.op_timings and "attention" in snap.op_timings[-1][1]   # eager CPU: every step

    used = int(snap.pool.ref_cnt.argmax())
    host.command(m.BlockInfoQuery(used))
    reply = _of(sent, m.BlockInfoReply)[-1]
    assert reply.block_id == used and reply.info["ref_cnt"] >= 1 and "text" in reply.info

    host.command(m.Update({"max_num_seqs": 3}))
    assert _of(sent, m.ConfigChanged)[-1].config.scheduler.max_num_seqs == 3

    host.command(m.Export("metrics", str(tmp_path / "m.csv")))
    done = _of(sent, m.Exported)[-1]
    assert done.error is None and done.count == 2 and (tmp_path / "m.csv").exists()

    host.command(("step", 1))                        # the old tuple form is no command
    assert "not a command" in _of(sent, m.Failed)[-1].message
    for msg in sent:                                 # everything crosses the process pipe
        assert type(pickle.loads(pickle.dumps(msg))) is type(msg)
    host.command(m.Quit())
    assert host.quit
