"""The Serving tab driven through its real widgets, on a tiny random Llama."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.serving import pool_image as pi
from tinyserve_core.engine.config import EngineConfig

pytestmark = pytest.mark.gui


def pull(tab, qtbot, pred, timeout=60000):
    """Run frames by hand until pred(snapshot) holds for a snapshot just applied."""
    hit = []

    def check():
        tab.frame()
        s = getattr(tab, "last_snapshot", None)
        if s is not None and pred(s):
            hit.append(s)
            return True
        return False
    qtbot.waitUntil(check, timeout=timeout)
    return hit[0]


def test_window_shows_engine_summary(make_window, gui_config):
    w = make_window(gui_config())
    text = w.serving.summary.text()
    assert "2 layers" in text and "256 blocks x 4 tokens" in text and "kernels:" in text
    assert w.tabs.tabText(0) == "Serving"


def test_an_fp8_cache_is_named_and_counted_in_the_summary(make_window, gui_config, qtbot):
    """kv_cache_dtype fp8: the header says so, before the engine is built and after, and the
    pool's bytes are its e4m3 codes, its page bounds (codes too) and the page scales."""
    from app.serving.summary import config_summary
    from tinyserve_core.model.config import ModelConfig

    cfg = gui_config(kv_cache_dtype="fp8", policy="dense")
    w = make_window(cfg)
    assert "KV fp8 e4m3" in w.serving.summary.text()
    # the engine's own summary (device and dtype) replaces the settings' once it is built
    qtbot.waitUntil(lambda: "cpu float32" in w.serving.summary.text(), timeout=60000)
    assert "KV fp8 e4m3" in w.serving.summary.text()
    mc = ModelConfig.from_dir(cfg.model.model)
    h, d, layers = mc.num_key_value_heads, mc.head_dim, mc.num_hidden_layers
    assert config_summary(cfg)["kv_bytes"] == 256 * layers * (2 * 4 * h * d + 2 * h * d + 2 * h * 4)


def test_pause_and_step_advance_exactly_one_step(make_window, gui_config, qtbot):
    w = make_window(gui_config())
    tab, worker = w.serving, w.serving.worker
    assert worker.steps_done == 0
    qtbot.mouseClick(tab.controls.step_btn, Qt.MouseButton.LeftButton)
    pull(tab, qtbot, lambda s: s.step >= 1)
    qtbot.wait(300)
    assert worker.steps_done == 1
    qtbot.mouseClick(tab.controls.step_btn, Qt.MouseButton.LeftButton)
    pull(tab, qtbot, lambda s: s.step >= 2)
    qtbot.wait(300)
    assert worker.steps_done == 2
    assert len(worker.records()) == 2
    # start then pause: it stops, and stays stopped
    qtbot.mouseClick(tab.controls.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: worker.steps_done >= 4, timeout=60000)
    qtbot.mouseClick(tab.controls.pause_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: worker.state in ("paused", "done"), timeout=5000)
    n = worker.steps_done
    qtbot.wait(300)
    assert worker.steps_done == n


def test_parallel_sampling_copy_on_write_is_an_arrow_not_a_fill(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=2, prompt_len=10, prompt_len_max=10))
    tab = w.serving
    seen = {}

    def has_cow(s):
        if s.pool_events.cow.size:
            seen["cow"] = s.pool_events.cow.copy()
            seen["snap"] = s
            return True
        tab.worker.step_once()
        return False
    tab.worker.step_once()
    pull(tab, qtbot, has_cow)
    v = tab.pool_view
    assert v.link_count() >= 1                               # the src -> dst arrow
    block, dst, kind, alpha = v.animator.live_events(v._last_draw_t)
    arrows = {(int(b), int(d)) for b, d, k in zip(block, dst, kind) if pi.EVENT_KINDS[k] == "cow"}
    assert {(int(s), int(d)) for s, d in seen["cow"]} <= arrows
    # the fills show the state only: each block's owner, or its grey
    p = seen["snap"].pool
    assert (v.animator.decode(v.last_image) == pi.base_index(p.ref_cnt, p.owner, p.fill, p.evictable)).all()
    cows = [e for r in tab.worker.records() for e in r.events if e.kind == "cow_copy"]
    assert len(cows) >= 1


def test_zoomed_in_pool_shows_refcounts_as_numbers(make_window, gui_config, qtbot):
    w = make_window(gui_config(n=2, requests=2, prompt_len=10, prompt_len_max=10))
    tab = w.serving
    tab.worker.step_n(3)
    snap = pull(tab, qtbot, lambda s: s.step >= 3)
    v = tab.pool_view
    tab.frame()
    assert v.numbers_shown() == []                           # 256 small cells: the strip only
    v.plot.setRange(xRange=(0, 4), yRange=(0, 2), padding=0)  # what the wheel does
    qtbot.wait(50)
    v.render()
    shown = v.numbers_shown()
    used = snap.pool.ref_cnt[: v.animator.cols * 2].reshape(2, -1)[:, :4]
    from app.widgets.palette import refcount_label
    assert sorted(shown) == sorted(refcount_label(int(r)) for r in used[used > 0])
    assert shown
    v.plot.setRange(yRange=(-3, 10 * v.animator.rows), padding=0)   # panned past the pool
    (_, _), (y0, y1) = v.plot.vb.viewRange()
    assert y0 >= 0 and y1 <= v.animator.rows                  # the y range stays on the pool
    v.fit()                                                   # a double click
    v.render()
    (x0, x1), (y0, y1) = v.plot.vb.viewRange()
    assert (x0, x1, y0, y1) == (0, v.animator.cols, 0, v.animator.rows) and v.numbers_shown() == []


def test_window_fits_the_screen_and_restores_its_geometry(qtbot, gui_config, settings):
    from app.main_window import MainWindow
    w = MainWindow(gui_config(), settings=settings, restore_layout=True, extra_tabs=False)
    qtbot.addWidget(w)
    area = w.screen().availableGeometry()
    assert abs(w.width() - int(area.width() * 0.9)) <= 2 and abs(w.height() - int(area.height() * 0.9)) <= 2
    w.resize(700, 500)
    w.save_settings()
    w.serving.shutdown()
    w2 = MainWindow(gui_config(), settings=settings, restore_layout=True, extra_tabs=False)
    qtbot.addWidget(w2)
    assert (w2.width(), w2.height()) == (700, 500)
    w2.serving.shutdown()


def test_view_names_match_the_window(make_window, gui_config):
    from app.main import VIEW_NAMES
    w = make_window(gui_config())
    assert set(VIEW_NAMES) == set(w.serving.views())


def test_invalid_field_shows_message_and_changes_nothing(make_window, gui_config, qtbot):
    w = make_window(gui_config())
    c = w.serving.controls
    before = c.config.to_dict()
    c.widgets["prompt_len_max"].setValue(5)        # below prompt_len = 12
    c.flush()
    assert c.errors["prompt_len"].isHidden()          # the message sits at the field edited
    msg = c.errors["prompt_len_max"].text()
    assert "must be an integer from 12" in msg and not c.errors["prompt_len_max"].isHidden()
    assert c.value("prompt_len_max") == 24           # the widget went back
    assert c.config.to_dict() == before
    assert w.serving.worker.config.workload.prompt_len_max == 24


def test_clash_with_another_field_shows_under_the_edited_field(make_window, gui_config):
    w = make_window(gui_config())
    c = w.serving.controls
    c.widgets["prompt_len"].setValue(30)           # above prompt_len_max = 24
    c.flush()
    assert c.errors["prompt_len_max"].isHidden()
    msg = c.errors["prompt_len"].text()
    assert not c.errors["prompt_len"].isHidden()
    assert msg.startswith("conflicts with prompt length (max): ") and "got 24" in msg
    assert c.value("prompt_len") == 12


def test_field_hints_use_plain_numbers():
    from app.serving.controls import FIELD_BY_KEY, field_hint, human
    assert human(1 << 20) == "1,048,576" and human(0.05) == "0.05" and human(100.0) == "100"
    hint = field_hint(FIELD_BY_KEY["num_blocks"])
    assert "1 to 1,048,576" in hint and "e+" not in hint and "restarts the engine" in hint


def test_live_change_reaches_engine_without_restart(make_window, gui_config, qtbot):
    w = make_window(gui_config(), mode="thread")
    tab = w.serving
    eng = tab.worker._host.sim.engine
    tab.controls.widgets["max_num_seqs"].setValue(3)
    tab.controls.flush()
    tab.worker.step_once()
    snap = pull(tab, qtbot, lambda s: s.step >= 1)
    assert tab.worker._host.sim.engine is eng            # same engine, no rebuild
    assert eng.config.scheduler.max_num_seqs == 3 and eng.scheduler.max_num_seqs == 3
    assert snap.engine_config["max_num_seqs"] == 3 and snap.generation == 1


def test_workload_change_applies_to_arrivals_to_come(make_window, gui_config, qtbot):
    w = make_window(gui_config(requests=40, rate=1.0), mode="thread")
    tab = w.serving
    sim = tab.worker._host.sim
    first = [r.arrival_s for r in sim.workload]
    tab.controls.widgets["rate"].setValue(50.0)
    tab.controls.flush()
    tab.worker.step_once()
    qtbot.waitUntil(lambda: tab.worker.steps_done >= 1, timeout=60000)
    gaps_before = np.diff(first).mean()
    rest = [r.arrival_s for r in sim.workload[sim._next:]]
    assert len(rest) > 10 and np.diff(rest).mean() < gaps_before / 5


def test_restart_key_asks_then_rebuilds(make_window, gui_config, qtbot):
    w = make_window(gui_config())
    tab = w.serving
    c = tab.controls
    asked = []
    c.confirm = lambda text: asked.append(text) or False
    c.widgets["num_blocks"].setValue(512)
    assert asked and c.config.cache.num_blocks == 256 and c.value("num_blocks") == 256
    c.confirm = lambda text: True
    c.widgets["num_blocks"].setValue(512)
    snap = pull(tab, qtbot, lambda s: s.num_blocks == 512, timeout=90000)
    assert snap.generation == 2 and snap.engine_config["num_blocks"] == 512
    assert tab.pool_view.animator.num_blocks == 512
    # the header follows the new engine (its `ready` signal may land a frame later)
    qtbot.waitUntil(lambda: "512 blocks x 4 tokens" in tab.summary.text(), timeout=10000)


def test_an_fp8_cache_under_a_key_reading_policy_is_refused_under_the_field(make_window, gui_config):
    """kv_cache_dtype fp8 while twostage selects (it reads a quantised key copy): the message
    says why under the KV cache dtype field and names the policies that work, the widget goes
    back, nothing restarts; under quest (which reads the page bounds, kept as codes) the same
    change asks for the restart."""
    w = make_window(gui_config(policy="twostage"))
    c = w.serving.controls
    asked = []
    c.confirm = lambda text: asked.append(text) or False
    combo = c.widgets["kv_cache_dtype"]
    combo.setCurrentIndex(combo.findData("fp8"))
    c.commit("kv_cache_dtype")
    assert not asked and c.value("kv_cache_dtype") == "auto" and c.config.cache.kv_cache_dtype == "auto"
    assert "twostage policy" in c.error_text("kv_cache_dtype") and "quest" in c.error_text("kv_cache_dtype")
    c.widgets["policy"].setCurrentIndex(c.widgets["policy"].findData("quest"))
    c.commit("policy")
    combo.setCurrentIndex(combo.findData("fp8"))
    c.commit("kv_cache_dtype")
    assert asked and "KV cache dtype" in asked[0] and c.error_text("kv_cache_dtype") == ""


def test_exports_are_valid_and_config_round_trips(make_window, gui_config, qtbot, tmp_path):
    from tinyserve_core.observe.trace import validate_trace
    w = make_window(gui_config(rate=7.5, n=2))
    tab = w.serving
    tab.worker.step_n(6)
    qtbot.waitUntil(lambda: tab.worker.steps_done >= 6, timeout=60000)
    n = tab.export_trace(tmp_path / "trace.json")
    assert n == 6
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert validate_trace(trace) == []
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])
    with pytest.raises(OSError, match="nowhere"):
        tab.export_trace(tmp_path / "nowhere" / "trace.json")      # said, not fatal
    rows = tab.export_metrics(tmp_path / "m.csv")
    with open(tmp_path / "m.csv") as f:
        table = list(csv.DictReader(f))
    assert rows == len(table) == 6
    # save -> the CLI's loader reads the same settings; open -> the widgets show them
    tab.controls.widgets["tier_pages"].setValue(4)
    tab.save_config(tmp_path / "session.json")
    saved = EngineConfig.load(tmp_path / "session.json")
    assert saved == tab.config and saved.workload.rate == 7.5 and saved.selection.tier_pages == 4
    other = EngineConfig.from_dict({**saved.to_dict(), "rate": 3.25, "n": 1})
    other.save(tmp_path / "other.json")
    tab.open_config(tmp_path / "other.json")
    assert tab.controls.value("rate") == 3.25 and tab.controls.value("n") == 1
    qtbot.waitUntil(lambda: tab.worker.state == "paused" and tab.worker.config == other, timeout=90000)
    # screenshots: the window and a single view
    w.screenshot(tmp_path / "win.png")
    w.screenshot(tmp_path / "pool.png", "Block pool")
    assert (tmp_path / "win.png").stat().st_size > 1000 and (tmp_path / "pool.png").stat().st_size > 1000



def test_file_dialogs_say_what_they_wrote_and_warn_on_a_bad_path(make_window, gui_config, qtbot, tmp_path,
                                                                  monkeypatch):
    from PySide6.QtWidgets import QMessageBox
    w = make_window(gui_config())
    tab = w.serving
    tab.worker.step_n(3)
    qtbot.waitUntil(lambda: tab.worker.steps_done >= 3, timeout=60000)
    asked = []
    monkeypatch.setattr(w, "_ask_path", lambda title, filt, save=True: asked.append(save) or str(answer))
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: warned.append(a[1:]))
    answer = tmp_path / "m.csv"
    w.export_metrics_dialog()
    assert answer.exists() and w.statusBar().currentMessage() == f"wrote 3 rows to {answer}"
    answer = tmp_path / "session.json"
    w.save_config_dialog()
    assert EngineConfig.load(answer) == tab.config
    assert w.statusBar().currentMessage() == f"saved {answer} (tinyserve simulate --config {answer})"
    answer = tmp_path / "nowhere" / "trace.json"
    w.export_trace_dialog()
    assert "export trace failed" in w.statusBar().currentMessage() and "nowhere" in w.statusBar().currentMessage()
    assert warned and warned[0][0] == "TinyServe: export trace" and not answer.exists()
    answer = tmp_path / "missing.json"
    w.open_config_dialog()
    assert "open config failed" in w.statusBar().currentMessage() and len(warned) == 2
    assert asked == [True, True, True, False]  # open asks for an existing file

class _FailOnce:
    """A real Simulation whose second step raises, once."""

    def __init__(self, config):
        from tinyserve_core.engine.simulate import Simulation
        self._sim = Simulation(config)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._sim, name)

    def step(self):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("injected failure in step 2")
        return self._sim.step()


def test_engine_error_goes_to_status_bar_and_app_keeps_running(make_window, gui_config, qtbot):
    w = make_window(gui_config(), factory=_FailOnce)
    tab = w.serving
    tab.worker.step_once()
    qtbot.waitUntil(lambda: tab.worker.steps_done == 1, timeout=60000)
    tab.worker.step_once()
    qtbot.waitUntil(lambda: tab.last_error is not None, timeout=60000)
    assert "injected failure in step 2" in w.statusBar().currentMessage()
    assert "Traceback" in tab.last_error[1]
    # still usable: the next step works and the view follows
    tab.worker.step_once()
    qtbot.waitUntil(lambda: tab.worker.steps_done == 2, timeout=60000)
    pull(tab, qtbot, lambda s: s.step == 2)
    assert w.isVisible()


def test_bad_model_folder_is_reported_not_fatal(make_window, gui_config, qtbot, tmp_path):
    w = make_window(gui_config())
    tab = w.serving
    tab.controls.confirm = lambda text: True
    tab.controls.widgets["model"].edit.setText(str(tmp_path / "nowhere"))
    tab.controls.commit("model")
    qtbot.waitUntil(lambda: tab.last_error is not None, timeout=60000)
    assert "nowhere" in w.statusBar().currentMessage()
    assert tab.worker.state == "error"
    good = gui_config()
    tab.restart(good)
    qtbot.waitUntil(lambda: tab.worker.state == "paused", timeout=90000)


def test_policy_change_changes_the_page_selection_records(make_window, gui_config, qtbot):
    w = make_window(gui_config(policy="quest", stats=True, budget=16, dense_layers=0,
                               prompt_len=30, prompt_len_max=40, output_len=12, output_len_max=16,
                               requests=3, rate=100.0))
    tab = w.serving
    worker = tab.worker

    def selections():
        """(policy, selected pages, context pages) of every (sequence, layer, kv-head) record."""
        out = []
        for d in (s.detail for r in worker.records() for s in r.selection if s.detail is not None):
            ctx = d.channel("context_pages").astype(int)
            out += [(d.policy, tuple(d.pages(li, b, h).tolist()), int(ctx[li, b, h]))
                    for li in range(len(d.layers)) for b in range(len(d.seq_ids)) for h in range(d.num_heads)]
        return out

    worker.step_n(4)
    qtbot.waitUntil(lambda: worker.steps_done >= 4, timeout=60000)
    # records reach the GUI after the step count does, and statistics one step late. How many
    # of the first steps are prefills depends on how the three arrivals fall on the engine
    # clock (each step's wall time): on a fast machine each request gets a prefill of its own
    # and the first decode's statistics come with step 5. So step on, one at a time, until
    # they have come (bounded: the requests decode for 12+ steps).
    done, deadline = 4, time.monotonic() + 120
    while not selections():
        assert time.monotonic() < deadline and done < 12, "no page selection record reached the GUI"
        if worker.steps_done >= done:
            worker.step_n(1)
            done += 1
        qtbot.wait(100)
    before = selections()
    assert before and {e[0] for e in before} == {"quest"}
    assert all(len(e[1]) == 4 < e[2] for e in before)               # 16 tokens = 4 pages
    n_before = len(before)
    combo = tab.controls.widgets["policy"]
    combo.setCurrentIndex(combo.findData("streaming"))
    tab.controls.commit("policy")                                    # what `activated` does
    worker.step_n(3)
    qtbot.waitUntil(lambda: worker.steps_done >= done + 3, timeout=60000)
    # records reach the GUI after the step count does: wait for the streaming ones
    qtbot.waitUntil(lambda: any(e[0] == "streaming" for e in selections()[n_before:]), timeout=60000)
    after = selections()[n_before:]
    # statistics arrive one step late: the last quest step comes first, then streaming only
    k = next(i for i, e in enumerate(after) if e[0] == "streaming")
    assert {e[0] for e in after[:k]} <= {"quest"}
    after = after[k:]
    assert after and {e[0] for e in after} == {"streaming"}
    # query-blind sink + recent window: page 0 and the 3 newest pages, whatever the scores
    window = lambda e: (0,) + tuple(range(e[2] - 3, e[2]))          # noqa: E731
    assert all(e[1] == window(e) for e in after)
    assert any(e[1] != window(e) for e in before)                   # quest follows the scores
    snap = pull(tab, qtbot, lambda s: s.step >= done + 3 and s.selection is not None)
    tab.selection_view.render()
    assert snap.selection.policy == "streaming"
    assert "policy streaming" in tab.selection_view.info.text()
