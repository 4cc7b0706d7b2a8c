"""Rejected requests reach the summary: listed with their reasons in
the JSON, counted by the kind of reason in the table, not only in the trace."""

from __future__ import annotations

import json

from tinyserve_core.cli import main
from tinyserve_core.observe.events import Reject
from tinyserve_core.observe.record import StepRecord
from tinyserve_core.observe.summary import format_summary_table, summarize, summary_to_json


def test_rejections_are_listed_and_counted_by_kind():
    events = [Reject("a", "pool too small: needs 5 blocks at its peak, the pool has 4"),
              Reject("b", "empty prompt"),
              Reject("c", "pool too small: needs 9 blocks at its peak, the pool has 4")]
    s = summarize([StepRecord(0, 0.0, 0.1, "idle", (), events)])
    assert s.requests_rejected == 3 and s.rejections == {"pool too small": 2, "empty prompt": 1}
    data = json.loads(json.dumps(summary_to_json(s)))
    assert data["rejected"][0] == {"request_id": "a", "reason": events[0].reason}
    assert data["rejections"] == {"pool too small": 2, "empty prompt": 1}
    table = format_summary_table(s)
    row = next(line for line in table.splitlines() if line.startswith("rejected: pool too small"))
    assert " 2 " in row and "needs 5 blocks" in row
    assert any(line.startswith("rejected: empty prompt") for line in table.splitlines())


def test_simulate_prints_why_requests_were_rejected(tiny_model_dir, tmp_path, capsys):
    summ = tmp_path / "s.json"
    code = main(["simulate", "--model", str(tiny_model_dir), "--device", "cpu", "--requests", "3",
                 "--rate", "50", "--prompt-len", "40", "--prompt-len-max", "60", "--output-len", "4", "--block-size", "8",
                 "--num-blocks", "4", "--summary-json", str(summ)])
    assert code == 0
    out = capsys.readouterr().out
    assert "rejected: pool too small" in out and "the pool has 4" in out
    s = json.loads(summ.read_text())
    assert s["requests_rejected"] >= 1 and s["requests_rejected"] + s["requests_finished"] == 3
    assert s["rejections"] == {"pool too small": s["requests_rejected"]}
    assert all("pool has 4" in r["reason"] for r in s["rejected"])
