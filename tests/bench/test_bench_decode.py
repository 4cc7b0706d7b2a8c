"""`tinyserve bench decode` runs end to end (tiny shape on the CPU) and refuses bad values."""

import json

from tinyserve_core.cli import main


def test_bench_decode_writes_rows_for_each_point(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["bench", "decode", "--device", "cpu", "--shape", "tiny", "--layers", "2",
                 "--context", "256", "--batch", "1", "2", "--budget", "64", "--reps", "2",
                 "--quant-bits", "4", "--candidates", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert res["twostage"] == {"candidates": 2.0, "quant_bits": 4}
    assert [(r["context"], r["batch"]) for r in rows] == [(256, 1), (256, 2)]
    assert all(r["dense_ms"] > 0 and r["quest_ms"] > 0 for r in rows)
    # twostage beside quest at the same page count (graph-replayed on a GPU), and both eager
    assert all(r["twostage_ms"] > 0 and r["twostage_vs_quest"] == r["twostage_ms"] / r["quest_ms"]
               and r["twostage_eager_ms"] > 0 and r["quest_eager_ms"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "speed-up" in out and "twostage" in out


def test_bench_decode_bad_budget_names_the_field(capsys):
    assert main(["bench", "decode", "--device", "cpu", "--shape", "tiny", "--budget", "0"]) == 2
    assert "budget" in capsys.readouterr().err
