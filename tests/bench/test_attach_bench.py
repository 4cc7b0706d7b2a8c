"""`tinyserve bench attach` at toy sizes: the figures are there and nothing was dropped."""

import json

from tinyserve_core.cli import main


def test_bench_attach_small(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["bench", "attach", "--batches", "20", "--latency-batches", "50",
                 "--blocks", "5000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    tp, lt, mem = res["throughput"], res["latency"], res["memory"]
    assert tp["dropped"] == 0 and tp["gaps"] == 0 and tp["block_events_per_s"] > 0
    assert lt["batches"] == 50 and 0 < lt["p50_ms"] <= lt["p95_ms"]
    assert mem["blocks_live"] == 5000 and mem["map_cells"] == 5000 and mem["bytes_per_block"] > 0
    assert "block events/s" in capsys.readouterr().out
