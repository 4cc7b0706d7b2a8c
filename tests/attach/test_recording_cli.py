"""Recordings replay byte for byte; `tinyserve attach` live and from a recording."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.recording import MAGIC, Recorder, export_perfetto, load_recording, play
from tinyserve_core.attach.session import Attachment, build_summary
from tinyserve_core.attach.subscriber import LIVE, Endpoint
from tinyserve_core.cli import main
from tinyserve_core.errors import InputFileError
from tinyserve_core.observe.trace_check import validate_trace

from .publisher import cleared, removed, stored

KEYS = ["endpoints", "batches", "events", "malformed", "gaps", "replayed_batches", "blocks_live",
        "tree_roots", "max_chain_depth", "by_rank", "by_medium", "metrics"]


def _session(pub, path):
    att = Attachment([Endpoint(pub.url, pub.replay_url, 0)], record=path)
    pub.wait_subscriber()
    pub.send([stored([1, 2, 3]), stored([4], parent=2)])
    pub.send_frames([b"junk"])
    pub.send([removed([3])], deliver=False)                    # a gap, recovered by replay
    pub.send([stored([5], parent=4)])
    end = time.monotonic() + 5
    while not att.subscriber._deadline:
        assert time.monotonic() < end
        att.poll(20)
    pub.serve_replay()
    while att.streams[0].replaying or att.streams[0].stats.batches < 3:
        assert time.monotonic() < end
        att.poll(20)
    summary = att.summary()
    att.close()
    return summary


def test_recording_replays_byte_for_byte(make_pub, tmp_path):
    pub = make_pub()
    path = tmp_path / "r.tskv"
    live = _session(pub, path)
    rec = load_recording(path)
    lives = [m.frames for m in rec.messages if m.kind == LIVE]
    assert lives[0] == (b"", (0).to_bytes(8, "big"), pub.buffer[0][1])    # the exact bytes
    assert lives[1] == (b"junk",)
    model = CacheModel()
    streams = play(rec, model)
    assert build_summary(rec.endpoints, streams, model, []) == live
    assert live["gaps"] == 1 and live["replayed_batches"] == 1 and live["malformed"] == 1
    # at speed 2 the waits add up to half the recording's span (a fake clock that the fake
    # sleep advances: the waits are measured against the clock, so a real one would make
    # them depend on this machine's load)
    now = [0.0]
    waits = []
    play(rec, CacheModel(), speed=2.0, clock=lambda: now[0],
         sleep=lambda s: (waits.append(s), now.__setitem__(0, now[0] + s)))
    span = rec.messages[-1].recv_ts - rec.messages[0].recv_ts
    assert span > 0 and sum(waits) == pytest.approx(span / 2, abs=1e-9)
    out = tmp_path / "t.json"
    n = export_perfetto(rec, out)
    obj = json.loads(out.read_text())
    assert validate_trace(obj) == [] and n == len(obj["traceEvents"])
    assert [e["args"]["live"] for e in obj["traceEvents"] if e["ph"] == "C"] == [4, 3, 4]


@pytest.mark.parametrize("mutate,field", [
    (lambda b: b"NOTAREC!" + b[8:], "header"),
    (lambda b: b[:-3], "message 4"),
    (lambda b: b + b"\x00\x00\x00\x02\x91\x01", "message 5"),
])
def test_loader_names_the_problem(make_pub, tmp_path, mutate, field):
    p = tmp_path / "r.tskv"
    w = Recorder(p, [Endpoint("tcp://h:1")])
    for i in range(5):
        w(0, LIVE, [b"", i.to_bytes(8, "big"), b"x"], float(i))
    w.close()
    data = p.read_bytes()
    assert data.startswith(MAGIC)
    bad = tmp_path / "bad.tskv"
    bad.write_bytes(mutate(data))
    with pytest.raises(InputFileError, match=f"bad.tskv: {field}"):
        load_recording(bad)


def test_cli_live_then_from_recording(make_pub, tmp_path, capsys):
    pub = make_pub()
    rec, s1, s2, tr = (tmp_path / n for n in ("r.tskv", "s1.json", "s2.json", "t.json"))

    def publish():
        pub.wait_subscriber(20)
        pub.send([stored([1, 2]), stored([3], parent=1, medium="CPU")])
        pub.send([removed([2]), cleared()])
        pub.send([stored([7, 8, 9])])
    t = threading.Thread(target=publish)
    t.start()
    rc = main(["attach", "--kv-events", pub.url, "--replay", pub.replay_url, "--duration", "2",
               "--record", str(rec), "--summary-json", str(s1)])
    t.join()
    assert rc == 0
    live = json.loads(s1.read_text())
    assert list(live) == KEYS
    assert live["events"] == {"BlockStored": 3, "BlockRemoved": 1, "AllBlocksCleared": 1, "other": 0}
    assert (live["batches"], live["blocks_live"], live["max_chain_depth"]) == (3, 3, 3)
    assert live["by_rank"] == {"0": {"batches": 3, "blocks_live": 3}} and live["metrics"] == {}
    rc = main(["attach", "--from-recording", str(rec), "--speed", "0", "--summary-json", str(s2),
               "--trace", str(tr)])
    assert rc == 0 and json.loads(s2.read_text()) == live
    assert "live blocks" in capsys.readouterr().out


def test_cli_refuses_bad_combinations_before_starting(tmp_path, capsys):
    assert main(["attach", "--kv-events", "tcp://127.0.0.1:1", "--trace", str(tmp_path / "t.json")]) == 2
    assert main(["attach", "--kv-events", "tcp://127.0.0.1:1",
                 "--summary-json", str(tmp_path / "missing" / "s.json")]) == 2
    assert main(["attach", "--from-recording", str(tmp_path / "nope.tskv")]) == 2
    assert main(["attach", "--kv-events", "tcp://127.0.0.1:1", "--replay", "http://h:5558"]) == 2
    assert main(["attach", "--kv-events", "nonsense", "--duration", "0"]) == 2
    err = capsys.readouterr().err
    assert "trace:" in err and "summary_json" in err and "nope.tskv" in err
    assert "replay: 'http://h:5558'" in err and "kv_events: nonsense" in err


def test_ctrl_c_ends_cleanly_with_the_summary_written(make_pub, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    pub = make_pub()
    s = tmp_path / "s.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "tinyserve_core.cli", "attach", "--kv-events", pub.url,
                          "--summary-json", str(s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pub.wait_subscriber(60)
        pub.send([stored([1, 2])])
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()
    summary = json.loads(s.read_text())
    assert list(summary) == KEYS and summary["blocks_live"] == 2
