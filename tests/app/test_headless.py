"""`tinyserve-gui --offscreen --config FILE --steps N --screenshot out.png`."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QImage

from app.main import main, parse_args

pytestmark = pytest.mark.gui


def run_gui(gui_config, tmp_path, *args: str, **cfg) -> int:
    """`tinyserve-gui --offscreen --config <a small config> ARGS`."""
    gui_config(**cfg).save(tmp_path / "cfg.json")
    return main(["--offscreen", "--config", str(tmp_path / "cfg.json"), *args])


def test_headless_screenshot(gui_config, tmp_path, qapp):
    out = tmp_path / "shot.png"
    rc = run_gui(gui_config, tmp_path, "--steps", "5", "--screenshot", str(out), "--size", "1280x800", n=2)
    assert rc == 0
    img = QImage(str(out))
    # exactly the size asked for: the window's minimum (every dock shown) fits 1280 px
    assert not img.isNull() and (img.width(), img.height()) == (1280, 800)
    # not a blank frame: many distinct colours (plots, pool cells, text)
    colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
    assert len(colours) > 50


def test_headless_bad_config_is_one_line_error(tmp_path, capsys, qapp):
    p = tmp_path / "bad.json"
    p.write_text('{"block_size": 3}')
    assert main(["--offscreen", "--config", str(p), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "block_size" in err and "power of two" in err


def test_cli_arguments_are_checked():
    with pytest.raises(SystemExit):
        parse_args(["--screenshot", "x.png"])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "2", "--size", "big"])
    a = parse_args(["--check-layout", "1280x720"])
    assert a.size == (1280, 720) and a.steps == 30 and parse_args([]).size is None


@pytest.mark.parametrize("argv, words", [
    (["--steps", "1", "--screenshot", "x.png", "--view", "Nope"], ["--view", "invalid choice", "'Nope'"]),
    (["--steps", "1", "--size", "big"], ["--size", "WxH"]),
    (["--steps", "1", "--size", "10x10"], ["--size", "320x240"]),
    (["--steps", "1", "--no-such-flag"], ["unrecognized arguments", "--no-such-flag"]),
    (["--summary-json", "s.json"], ["--summary-json needs --steps"]),
    (["--steps", "1", "--view", "Metrics"], ["--view needs --screenshot"]),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--offscreen", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("tinyserve-gui: ") and all(w in err for w in words), err


def test_missing_config_file_is_one_line_and_exit_2(tmp_path, capsys, qapp):
    assert main(["--offscreen", "--config", str(tmp_path / "none.json"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "none.json" in err


def test_bad_output_path_is_refused_before_the_engine_starts(gui_config, tmp_path, capsys, qapp):
    rc = run_gui(gui_config, tmp_path, "--steps", "3", "--summary-json", str(tmp_path / "missing" / "s.json"))
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "summary_json" in err and "does not exist" in err


def test_summary_json_has_the_simulate_keys(gui_config, tmp_path, capsys, qapp):
    import json

    from tinyserve_core.observe.summary import ServingSummary, summary_to_json
    out = tmp_path / "summary.json"
    rc = run_gui(gui_config, tmp_path, "--steps", "6", "--summary-json", str(out), "--size", "1280x720", n=2)
    assert rc == 0
    got = json.loads(out.read_text())
    assert set(got) == set(summary_to_json(ServingSummary()))
    assert got["num_steps"] == 6 and "num_evictions" in got and got["generation_tokens"] > 0
