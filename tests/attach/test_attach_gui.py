"""The Attach tab against the test publisher: blocks appear in the painted block map,
a junk frame and a gap show as states in the strip, a recording plays into the tab,
the dialog validates under its fields and remembers what it was given."""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.session import Attachment
from tinyserve_core.attach.subscriber import Endpoint

from .publisher import stored

pytestmark = pytest.mark.gui


@pytest.fixture
def tab(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.attach.tab import AttachTab
    t = AttachTab(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(t)
    t.resize(1280, 800)
    t.show()
    yield t
    t.shutdown()


def spec_of(pub, **kw):
    from app.attach.spec import AttachSpec
    return AttachSpec(kv_events=[pub.url], replay=[pub.replay_url] if pub.replay_url else [], **kw)


def painted_slots(tab) -> set[int]:
    """Slots whose cell shows a tree colour in the image the ImageItem holds."""
    img = tab.block_map.image_data
    shown = np.asarray(tab.block_map.image.image)
    assert shown.shape == img.rgba.shape
    cells = shown.reshape(-1, 4)[:, :3]
    filled = (img.cell_slot >= 0) & (cells.max(axis=1) > 60)
    return set(img.cell_slot[filled].tolist())


def test_blocks_appear_in_the_block_map(qtbot, tab, make_pub):
    pub = make_pub()
    tab.attach(spec_of(pub))
    pub.wait_subscriber()
    pub.send([stored([1, 2, 3]), stored([4, 5], parent=2)])
    qtbot.waitUntil(lambda: tab.last_frame is not None and tab.last_frame.blocks_live == 5, timeout=10000)
    assert len(painted_slots(tab)) == 5
    assert tab.last_frame.tree_roots == 1 and tab.last_frame.max_depth == 4
    # the forest shows one tree whose shared prefix (blocks 1-2) has two chains below it
    qtbot.waitUntil(lambda: len(tab.forest.trees) == 1, timeout=10000)
    top = tab.forest.trees[0].top
    assert (top.length, top.subtree, sorted(c.length for c in top.children)) == (2, 5, [1, 2])
    assert "live" in tab.status.texts[0]
    # clicking a cell selects its block and the details pane describes it
    slot = sorted(painted_slots(tab))[0]
    tab.block_map.select(slot)
    qtbot.waitUntil(lambda: "depth" in tab.details.toPlainText(), timeout=5000)
    assert "rank 0, GPU" in tab.details.toPlainText()
    # hovering a cell asks the worker and shows its answer as a tip
    from PySide6.QtCore import QPointF
    tips = []
    tab.block_map.show_tip = tips.append
    r, c = tab.block_map.image_data.cell_of(slot)
    tab.block_map.glw.scene().sigMouseMoved.emit(tab.block_map.plot.vb.mapViewToScene(QPointF(c + 0.5, r + 0.5)))
    assert tab.block_map.hovered == slot
    qtbot.waitUntil(lambda: bool(tips), timeout=5000)
    assert tips[0].startswith(f"slot {slot}: rank 0 GPU, depth")


def test_junk_frame_and_gap_show_as_states(qtbot, tab, make_pub):
    pub = make_pub(replay=False)
    tab.attach(spec_of(pub))
    pub.wait_subscriber()
    pub.send([stored([1])])
    pub.send_frames([b"only one frame"])                 # junk
    pub.send([stored([2], parent=1)], deliver=False)     # lost: a gap
    pub.send([stored([3], parent=2)])
    qtbot.waitUntil(lambda: tab.last_frame is not None and tab.last_frame.applied == 2, timeout=10000)
    text = tab.status.texts[0]
    assert "1 malformed" in text and "1 gap" in text
    assert "#ff6a6a" in tab.status.text()               # malformed: the warning colour


def test_replay_timeout_and_silent_rank_are_states(qtbot, tab, make_pub):
    from app.attach.status_strip import stream_state
    pub = make_pub()
    tab.attach(spec_of(pub), replay_timeout_s=0.3)
    pub.wait_subscriber()
    pub.send([stored([1])], deliver=False)
    pub.send([stored([2])])                               # joined late; nobody answers the replay
    qtbot.waitUntil(lambda: tab.last_frame is not None and tab.last_frame.streams
                    and tab.last_frame.streams[0].state == "replay timed out", timeout=10000)
    assert any("replay timed out" in t for t in tab.status.texts)
    s = tab.last_frame.streams[0]
    assert "silent" in stream_state(s, s.last_receive + 60)[0]


def test_bad_endpoint_is_a_state_not_a_dialog(qtbot, tab, make_pub):
    from app.attach.spec import AttachSpec
    pub = make_pub(replay=False)
    tab.attach(AttachSpec(kv_events=[pub.url], bind=True))     # the publisher holds that port
    qtbot.waitUntil(lambda: tab.last_frame is not None and tab.last_frame.state == "error", timeout=10000)
    assert "kv_events" in tab.status.text()


def test_recording_plays_into_the_tab(qtbot, tab, tmp_path, make_pub):
    from app.attach.spec import AttachSpec
    pub = make_pub(replay=False)
    rec = tmp_path / "run.tskv"
    att = Attachment([Endpoint(pub.url, None, 0)], record=rec, model=CacheModel())
    pub.wait_subscriber()
    for i in range(20):
        pub.send([stored([100 + i], parent=None if i == 0 else 99 + i)])
    while att.streams[0].stats.batches < 20:
        att.poll(50)
    att.close()
    tab.attach(AttachSpec(recording=str(rec), speed=0.0))
    qtbot.waitUntil(lambda: tab.last_frame is not None and tab.last_frame.state == "finished", timeout=10000)
    f = tab.last_frame
    assert f.blocks_live == 20 and f.max_depth == 20 and f.progress == (20, 20)
    assert len(painted_slots(tab)) == 20


def test_dialog_validates_under_the_field_and_remembers(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.attach.dialog import AttachDialog
    settings = QSettings(str(tmp_path / "d.ini"), QSettings.Format.IniFormat)
    d = AttachDialog(settings)
    qtbot.addWidget(d)
    d.kv_events.setText("http://wrong:5557")
    d.accept()
    assert d.spec is None and "tcp://HOST:PORT" in d.error_text("kv_events")
    d.kv_events.setText("tcp://127.0.0.1:5557")
    d.replay.setText("tcp://127.0.0.1:5558 tcp://127.0.0.1:6558")      # more replays than servers
    d.accept()
    assert d.spec is None and "2 replay URLs for 1" in d.error_text("replay")
    d.replay.setText("tcp://127.0.0.1:5558")
    d.metrics.setText("127.0.0.1:8000")
    d.accept()
    assert d.spec is None and "http://" in d.error_text("metrics_url")
    d.metrics.setText("http://127.0.0.1:8000/metrics")
    d.dp.setValue(4)
    d.accept()
    assert d.spec is not None and len(d.spec.validate()) == 4
    again = AttachDialog(settings)
    qtbot.addWidget(again)
    assert again.read_spec() == d.spec


def test_controls_open_attach_and_publish_field(qtbot):
    from app.serving.controls import ControlsPanel
    from tinyserve_core.engine.config import EngineConfig
    c = ControlsPanel(EngineConfig.from_dict({}))
    qtbot.addWidget(c)
    with qtbot.waitSignal(c.attach_clicked, timeout=1000):
        next(b for b in c.findChildren(type(c.start_btn)) if b.text().startswith("Attach")).click()
    c.widgets["kv_events"].edit.setText("tcp://*:5557")
    with qtbot.waitSignal(c.live_change, timeout=1000) as sig:
        c.commit("kv_events")
    assert sig.args == [{"kv_events": "tcp://*:5557"}]
    c.widgets["kv_events"].edit.setText("http://nope")
    assert not c.commit("kv_events") and "ZMQ endpoint" in c.error_text("kv_events")


def test_headless_attach_writes_the_screenshot(qapp, tmp_path, make_pub, capsys):
    import threading

    from PySide6.QtGui import QImage

    from app.main import main
    pub = make_pub(replay=False)

    def serve():
        pub.wait_subscriber(timeout_s=60)
        pub.send([stored([1, 2, 3])])
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = tmp_path / "attach.png"
    rc = main(["--attach", pub.url, "--seconds", "4", "--size", "1280x800", "--screenshot", str(out)])
    t.join(5)
    assert rc == 0 and "3 live blocks" in capsys.readouterr().out
    assert QImage(str(out)).size().width() == 1280


def test_forest_hover_decodes_the_chain_with_the_tokenizer(qtbot, tab, make_pub, tiny_model_dir):
    from tinyserve_core.model.tokenizer import Tokenizer
    tok = Tokenizer.from_dir(tiny_model_dir)
    ids = tok.encode("The list type is a mutable sequence.")[:8]
    pub = make_pub()
    tab.attach(spec_of(pub, tokenizer=str(tiny_model_dir)))
    pub.wait_subscriber()
    pub.send([stored([1, 2], tokens=ids[:4]), stored([3], parent=2, tokens=ids[4:6])])
    qtbot.waitUntil(lambda: len(tab.forest.trees) == 1 and tab.forest.trees[0].blocks == 3, timeout=10000)
    last = tab.forest.trees[0].top.last                     # one chain: root .. block 3
    tab.forest.chain_hovered.emit(last)
    qtbot.waitUntil(lambda: tab.forest.chain_text(last) is not None, timeout=5000)
    assert tab.forest.chain_text(last) == tok.decode(ids[:6])
    assert tab.forest.items[last].toolTip(0) == tok.decode(ids[:6])
