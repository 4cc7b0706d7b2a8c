"""The CLI as people use it: bad input is one line and exit 2; simulate writes files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinyserve_core.cli import main


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyserve_core.cli", *argv],
                          capture_output=True, text=True, timeout=120)


def test_bad_flag_value_is_one_line_and_exit_2():
    r = run_cli("simulate", "--rate", "fast")
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "rate" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("argv,field", [
    (["simulate", "--block-size", "24"], "block_size"),
    (["simulate", "--policy", "magic"], "policy"),
    (["simulate", "--workload", "poisson", "x.jsonl"], "workload"),
    (["simulate", "--config", "/nonexistent/cfg.json"], "config"),
])
def test_bad_settings_name_the_field(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_missing_model_folder_is_reported(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "nope"), "hello"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_simulate_writes_trace_metrics_and_summary(tiny_model_dir, tmp_path, capsys):
    trace, csv_path, summ = tmp_path / "t.json", tmp_path / "m.csv", tmp_path / "s.json"
    code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu",
                 "--requests", "6", "--rate", "50", "--prompt-len", "12", "--prompt-len-max", "40",
                 "--output-len", "4", "--output-len-max", "8", "--block-size", "8",
                 "--num-blocks", "64", "--n", "2", "--shared-prefix-frac", "0.5",
                 "--shared-prefix-len", "16", "--trace", str(trace), "--metrics", str(csv_path),
                 "--summary-json", str(summ)])
    assert code == 0
    out = capsys.readouterr().out
    assert "TTFT" in out or "ttft" in out.lower()
    from tinyserve_core.observe.trace import validate_chrome_trace
    validate_chrome_trace(json.loads(trace.read_text()))
    assert csv_path.read_text().count("\n") >= 3
    s = json.loads(summ.read_text())
    assert s["requests_finished"] == 6 or s.get("num_requests") == 6


def test_generate_prints_a_continuation(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--device", "cpu",
                 "--max-tokens", "5", "The list type"]) == 0
    assert capsys.readouterr().out.startswith("The list type")


def _bench_choices(parser):
    bench = next(a for a in parser._subparsers._group_actions[0].choices["bench"]._actions
                 if a.dest == "bench_what")
    return bench.choices


def test_a_missing_third_party_dependency_drops_only_its_subcommand(monkeypatch):
    """The GPU hosts have no PySide6: `tinyserve bench kernels` must still work there."""
    import argparse
    import importlib

    import tinyserve_core.cli as cli
    from tinyserve_core.cli._parser import add_from_module

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "app.bench.serving_gui":
            raise ModuleNotFoundError("No module named 'PySide6'", name="PySide6")
        if name == "tinyserve_core.bench.kv_typo":
            raise ModuleNotFoundError("No module named 'tinyserve_core.bench.kv_typo'",
                                      name="tinyserve_core.bench.kv_typo")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ModuleNotFoundError):
        add_from_module(sub, "tinyserve_core.bench.kv_typo")  # our own missing module is a bug
    choices = _bench_choices(cli.build_parser())
    assert "kernels" in choices and "gui" not in choices and "scene-gui" in choices


def test_without_pyside6_the_qt_benchmarks_are_left_out(monkeypatch):
    import importlib.util

    import tinyserve_core.cli as cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PySide6" else real(name, *a))
    choices = _bench_choices(cli.build_parser())
    assert {"engine", "kernels", "decode", "kv"} <= set(choices)
    assert "gui" not in choices and "scene-gui" not in choices


def test_qt_benchmarks_register_from_app():
    import tinyserve_core.cli as cli

    choices = _bench_choices(cli.build_parser())
    assert choices["gui"].get_default("func").__module__ == "app.bench.serving_gui"
    assert choices["scene-gui"].get_default("func").__module__ == "app.bench.scene_gui"
