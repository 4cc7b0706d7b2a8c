"""Output paths as people get them wrong: checked before any work (one line, exit 2); a
write that still fails at the end costs only itself (exit 1, one line per failed output);
an interrupted `simulate` keeps what it has (exit 130, valid partial files)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyserve_core import writers
from tinyserve_core.cli import main
from tinyserve_core.observe.trace import validate_trace

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("flag,field", [("--summary-json", "summary_json"), ("--trace", "trace"),
                                        ("--metrics", "metrics")])
def test_simulate_checks_outputs_before_loading_anything(flag, field, tmp_path, capsys):
    # the model folder does not exist either: the output path must be reported first
    code = main(["simulate", "--model", str(tmp_path / "no-model"), flag, "/nope/out.file"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "/nope/out.file" in line and field in line and "does not exist" in line


def test_simulate_refuses_two_outputs_on_one_file(tmp_path, capsys):
    out = tmp_path / "same.json"
    assert main(["simulate", "--trace", str(out), "--summary-json", str(out)]) == 2
    assert "summary_json" in _one_error_line(capsys)


def test_workload_checks_out_before_generating(capsys):
    assert main(["workload", "--requests", "3", "--out", "/nope/w.jsonl"]) == 2
    line = _one_error_line(capsys)
    assert "/nope/w.jsonl" in line and "out" in line


@pytest.mark.parametrize("argv", [["eval", "lm", "--json"], ["eval", "selection", "--json"],
                                  ["eval", "selection", "--md"]])
def test_eval_checks_outputs_before_loading_the_model(argv, tmp_path, capsys):
    # a directory is no file to write; the model folder is missing too and is not reached
    assert main([*argv, str(tmp_path), "--model", str(tmp_path / "no-model")]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path) in line and "is a directory" in line


def test_bench_checks_json_before_the_benchmark(capsys):
    assert main(["bench", "decode", "--json", "/nope/b.json"]) == 2
    assert "/nope/b.json" in _one_error_line(capsys)


SIM = ["--device", "cpu", "--requests", "4", "--rate", "50", "--prompt-len", "12", "--prompt-len-max", "20",
       "--output-len", "3", "--output-len-max", "4", "--block-size", "8", "--num-blocks", "64"]


def test_a_write_failing_at_the_end_costs_only_itself(tiny_model_dir, tmp_path, monkeypatch, capsys):
    trace, metrics, summary = tmp_path / "t.json", tmp_path / "m.csv", tmp_path / "s.json"
    real_replace = writers.os.replace

    def replace(src, dst):
        if Path(dst).name == "s.json":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(writers.os, "replace", replace)
    code = main(["simulate", "--model", str(tiny_model_dir), *SIM, "--trace", str(trace),
                 "--metrics", str(metrics), "--summary-json", str(summary)])
    assert code == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if "not written" in line]
    assert len(failed) == 1 and "s.json" in failed[0] and "No space left" in failed[0]
    assert "Serving summary" in captured.out
    assert validate_trace(json.loads(trace.read_text())) == []
    assert len(list(csv.reader(metrics.open()))) > 2
    assert not summary.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "t.json"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_simulate_writes_partial_outputs(sig, tiny_model_dir, tmp_path):
    trace, metrics, summary = tmp_path / "t.json", tmp_path / "m.csv", tmp_path / "s.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # far more work than the test waits for: the run is always cut short
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyserve_core.cli", "simulate", "--model", str(tiny_model_dir), "--device", "cpu",
         "--requests", "5000", "--rate", "1000", "--prompt-len", "32", "--prompt-len-max", "48", "--output-len", "64",
         "--trace", str(trace), "--metrics", str(metrics), "--summary-json", str(summary)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        proc.stderr.read(1)                 # the progress bar's first output: the run is on
        time.sleep(1.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    s = json.loads(summary.read_text())
    assert s["partial"] is True and s["num_steps"] > 0
    assert "partial" in out.decode()
    t = json.loads(trace.read_text())
    assert validate_trace(t) == [] and t["otherData"]["num_steps"] == s["num_steps"]
    rows = list(csv.reader(metrics.open()))
    assert len(rows) == s["num_steps"] + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "s.json", "t.json"]
    check = subprocess.run([sys.executable, "-m", "tinyserve_core.cli", "check-trace", str(trace)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stderr
