"""The per-device tuning table (csrc/tuning.json): loading, validation, lookup, and how the
backend hands the row to the extension. CPU only."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tinyserve_core.errors import InputFileError
from tinyserve_core.kernels import tuning

ROW = {"split_min_tiles": 4, "split_cost": 0.01, "max_splits": 128, "score_max_ppc": 256,
       "score_min_ctas_per_sm": 1.5, "decode_l2_prefetch": 1, "sparse_fused_max_batch": 4,
       "decode_merge_max_splits": 0}


def _table(tmp_path, rows):
    p = tmp_path / "tuning.json"
    p.write_text(json.dumps({"about": "test", "devices": rows}))
    return p


def test_shipped_table_has_default_and_h100_rows():
    rows = tuning.load_table()
    names = {r["name"] for r in rows}
    assert "default" in names and "NVIDIA H100 80GB HBM3" in names
    # the default row is the policy the kernels shipped with (H100-tuned)
    d = tuning.row_for(rows, "Some Future GPU", 200)
    assert tuning.args_of(d)[:6] == [8, 0.002, 256, 128, 8.0, 0]


def test_lookup_by_name_and_sms_then_name_then_default(tmp_path):
    rows = tuning.load_table(_table(tmp_path, [
        {"name": "default", **ROW},
        {"name": "GPU X", "sms": 132, **ROW, "split_min_tiles": 2},
        {"name": "GPU X", "sms": 114, **ROW, "split_min_tiles": 16},
    ]))
    assert tuning.row_for(rows, "GPU X", 114)["split_min_tiles"] == 16
    assert tuning.row_for(rows, "GPU X", 132)["split_min_tiles"] == 2
    assert tuning.row_for(rows, "GPU X", 78)["split_min_tiles"] == 2      # name only
    assert tuning.row_for(rows, "GPU Y", 132)["name"] == "default"


@pytest.mark.parametrize("bad, field", [
    ({"name": "default", **ROW, "split_min_tiles": 0}, "split_min_tiles"),
    ({"name": "default", **ROW, "split_cost": "x"}, "split_cost"),
    ({"name": "default", **ROW, "max_splits": 2.5}, "max_splits"),
    ({"name": "GPU X", **ROW}, "sms"),
    ({"name": "default", **ROW, "decode_l2_prefetch": 2}, "decode_l2_prefetch"),
    ({"name": "default", **ROW, "decode_l2_prefetch": True}, "decode_l2_prefetch"),
    ({"name": "default", **ROW, "sparse_fused_max_batch": -1}, "sparse_fused_max_batch"),
    ({"name": "default", **ROW, "sparse_fused_max_batch": 2.0}, "sparse_fused_max_batch"),
    ({"name": "default", **ROW, "decode_merge_max_splits": -1}, "decode_merge_max_splits"),
])
def test_bad_rows_name_the_field(tmp_path, bad, field):
    with pytest.raises(InputFileError, match=field):
        tuning.load_table(_table(tmp_path, [{"name": "default", **ROW}, bad]))


def test_table_without_default_is_refused(tmp_path):
    with pytest.raises(InputFileError, match="default"):
        tuning.load_table(_table(tmp_path, [{"name": "GPU X", "sms": 1, **ROW}]))


def test_apply_hands_the_device_row_to_the_extension(monkeypatch):
    import torch

    rows = [{"name": "default", **ROW}, {"name": "GPU X", "sms": 100, **ROW, "score_max_ppc": 512}]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name="GPU X", multi_processor_count=100))
    calls = []
    row = tuning.apply(SimpleNamespace(set_tuning=lambda *a: calls.append(a)), rows=rows)
    assert calls == [(4, 0.01, 128, 512, 1.5, 1, 4, 0)]
    assert row["device"] == "GPU X" and tuning.applied()["score_max_ppc"] == 512
    assert "GPU X / 100 SMs" in tuning.describe(row)


def test_bench_report_prints_the_tuning_row_and_flashinfer_version():
    from tinyserve_core.bench.kernels import report

    res = {"copy_bw_gbps": 4000.0, "gpu": "GPU X", "torch": "2.x",
           "shape": {"hq": 32, "hkv": 8, "head_dim": 128, "block": 16},
           "tuning": {"name": "GPU X", "sms": 100, **ROW}, "flashinfer_version": "0.2.14.post1",
           "decode": [{"batch": 1, "ctx": 1024, "splits": 2, "ours_ms": 0.01, "ours_pct_bw": 50.0}]}
    text = report(res)
    assert "tuning row GPU X / 100 SMs: split_min_tiles 4" in text
    assert "FlashInfer 0.2.14.post1" in text


def test_apply_without_a_gpu_keeps_the_built_in_defaults(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []
    assert tuning.apply(SimpleNamespace(set_tuning=lambda *a: calls.append(a))) == {}
    assert calls == []
