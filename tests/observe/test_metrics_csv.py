"""Metrics CSV: the documented columns, one row per step, values that read back."""

from __future__ import annotations

import csv
import dataclasses
import io

import pytest

from tinyserve_core.observe.csv_export import CSV_COLUMNS, MetricsCsvWriter, write_metrics_csv
from tinyserve_core.observe.record import StepMetrics


def test_columns_are_step_fields_then_every_metric():
    metric_names = [f.name for f in dataclasses.fields(StepMetrics)]
    assert list(CSV_COLUMNS) == ["step", "t_start", "t_end", "phase", *metric_names]
    assert {"kv_cache_usage_perc", "num_requests_running", "num_requests_waiting", "num_preemptions",
            "prefix_cache_queries", "prefix_cache_hits"} <= set(metric_names)


def test_one_row_per_step_and_values_read_back(run_records, tmp_path):
    path = tmp_path / "m.csv"
    assert write_metrics_csv(run_records, path) == len(run_records)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert len(rows) == len(run_records)
    for row, rec in zip(rows, run_records):
        assert int(row["step"]) == rec.step and row["phase"] == rec.phase
        assert float(row["t_start"]) == rec.t_start and float(row["t_end"]) == rec.t_end
        for f in dataclasses.fields(StepMetrics):
            want = getattr(rec.metrics, f.name)
            got = type(want)(row[f.name]) if not isinstance(want, float) else float(row[f.name])
            assert got == want, f.name


def test_streaming_writer_to_an_open_file(run_records):
    buf = io.StringIO()
    w = MetricsCsvWriter(buf)
    for r in run_records[:3]:
        w.add(r)
    w.flush()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("step,t_start,t_end,phase,kv_cache_usage_perc")
    w.close()
    assert not buf.closed            # a caller's file stays the caller's to close


def test_writer_closes_its_own_file(tmp_path, run_records):
    with MetricsCsvWriter(tmp_path / "x.csv") as w:
        w.extend(run_records)
    assert (tmp_path / "x.csv").read_text().count("\n") == len(run_records) + 1
    with pytest.raises(ValueError):
        w.add(run_records[0])        # closed
