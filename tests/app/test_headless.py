"""`tinyserve-gui --offscreen --config FILE --steps N --screenshot out.png`."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QImage

from app.main import main, parse_args

pytestmark = pytest.mark.gui


def test_headless_screenshot(gui_config, tmp_path, qapp):
    cfg = gui_config(n=2)
    cfg.save(tmp_path / "cfg.json")
    out = tmp_path / "shot.png"
    rc = main(["--offscreen", "--config", str(tmp_path / "cfg.json"), "--steps", "5",
               "--screenshot", str(out), "--size", "1280x800"])
    assert rc == 0
    img = QImage(str(out))
    assert not img.isNull() and img.width() >= 1280 and img.height() >= 800
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
