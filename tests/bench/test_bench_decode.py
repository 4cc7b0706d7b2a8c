"""`tinyserve bench decode` runs end to end (tiny shape on the CPU) and refuses bad values."""

import json

import pytest

from tinyserve_core.cli import main


def test_bench_decode_writes_rows_for_each_point(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["bench", "decode", "--device", "cpu", "--shape", "tiny", "--layers", "2",
                 "--context", "256", "--batch", "1", "2", "--budget", "64", "--reps", "2",
                 "--quant-bits", "4", "--candidates", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert res["twostage"] == {"candidates": 2.0, "quant_bits": 4, "bound_copy": True}
    assert [(r["context"], r["batch"]) for r in rows] == [(256, 1), (256, 2)]
    assert all(r["dense_ms"] > 0 and r["quest_ms"] > 0 for r in rows)
    # twostage beside quest at the same page count (graph-replayed on a GPU), and both eager
    assert all(r["twostage_ms"] > 0 and r["twostage_vs_quest"] == r["twostage_ms"] / r["quest_ms"]
               and r["twostage_eager_ms"] > 0 and r["quest_eager_ms"] > 0 for r in rows)
    # the dense and quest steps over an FP8 copy of the same cache, beside their own floors
    for r in rows:
        assert r["dense_fp8_ms"] > 0 and r["fp8_speedup"] == r["dense_ms"] / r["dense_fp8_ms"]
        assert r["quest_fp8_ms"] > 0 and r["quest_fp8_speedup"] == r["quest_ms"] / r["quest_fp8_ms"]
        kv16, kv8 = r["dense"]["bytes"]["kv"], r["dense_fp8"]["bytes"]["kv"]
        assert kv8 * 4 == kv16   # float32 on the CPU: one byte an element against four
        assert r["quest_fp8"]["bytes"]["metadata"] * 4 == r["quest"]["bytes"]["metadata"]   # code bounds
    out = capsys.readouterr().out
    assert "speed-up" in out and "twostage" in out and "fp8 ms" in out and "quest fp8" in out
    assert out.count("  q fp8 ") == 2


def test_bench_decode_bad_budget_names_the_field(capsys):
    assert main(["bench", "decode", "--device", "cpu", "--shape", "tiny", "--budget", "0"]) == 2
    assert "budget" in capsys.readouterr().err


def test_bench_decode_sets_each_step_beside_its_floor_and_breakdown(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["bench", "decode", "--device", "cpu", "--shape", "tiny", "--layers", "1",
                 "--context", "128", "--batch", "1", "--budget", "32", "--reps", "1", "--breakdown",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["copy_bandwidth_gbs"] > 0 and res["torch"]
    (row,) = res["rows"]
    for policy in ("dense", "quest"):
        p = row[policy]
        assert p["floor_ms"] == pytest.approx(p["bytes"]["total"] / (res["copy_bandwidth_gbs"] * 1e9) * 1e3)
        assert p["vs_floor"] == pytest.approx(row[f"{policy}_ms"] / p["floor_ms"])
        b = p["breakdown"]
        assert b["kernels"] > 0 and b["gpu_busy"] == pytest.approx(
            sum(b[c] for c in ("gemm", "attention", "selection", "elementwise")), abs=1e-3)
        assert b["host_gap"] == pytest.approx(max(0.0, row[f"{policy}_ms"] - b["gpu_busy"]))
    assert row["quest"]["bytes"]["metadata"] > 0 == row["dense"]["bytes"]["metadata"]
    text = capsys.readouterr().out
    assert "step/floor" in text and "host gap" in text


def test_step_bytes_count_weights_once_and_the_attended_kv():
    import torch

    from tinyserve_core.bench.decode import _model
    from tinyserve_core.bench.decode_floor import category, step_bytes
    from tinyserve_core.engine.model_runner import ModelRunner

    model = _model("tiny", 2, "cpu")
    runner = ModelRunner(model, 64, 16)
    cfg = model.config
    token_kv = 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    dense = step_bytes(model, runner, 511, 3, "dense", 128)
    quest = step_bytes(model, runner, 511, 3, "quest", 128)
    linear = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    norms = (2 * 2 + 1) * 4 * cfg.hidden_size      # two per layer and the final one
    assert dense["weights"] == linear + norms + 3 * 4 * cfg.hidden_size   # + the batch's embedding rows
    assert dense["kv"] == 2 * 3 * 512 * token_kv
    assert quest["kv"] == 2 * 3 * 128 * token_kv           # budget: 8 pages of 16 tokens
    assert quest["metadata"] == 2 * 3 * 32 * token_kv      # every page's digest scored
    assert [category(n) for n in ("nvjet_tst_64x8_64x16", "paged_decode_kernel<__half, 128>",
                                  "page_scores_kernel", "rms_norm_kernel<__half, true>")] == \
        ["gemm", "attention", "selection", "elementwise"]


def test_the_h200_run_with_the_fp8_column():
    """The twenty-first session's `bench decode` on an H200 (tools/gpu_check.sh): the dense
    step over an FP8 cache beside the fp16 one at every point, and its floor row."""
    from pathlib import Path

    from tinyserve_core.bench.decode_floor import floor_table

    res = json.loads((Path(__file__).parents[1] / "kernels" / "data" / "bench_decode_h200_21.json").read_text())
    assert "H200" in res["machine"]
    by = {(r["context"], r["batch"]): r for r in res["rows"]}
    assert len(by) == 9 and all(r["fp8_speedup"] == r["dense_ms"] / r["dense_fp8_ms"] for r in by.values())
    assert round(by[(32768, 64)]["fp8_speedup"], 2) == 1.47
    assert all(by[(c, 64)]["fp8_speedup"] > 1.3 for c in (8192, 16384, 32768))
    text = floor_table(res, False)
    assert text.count("  fp8 ") == 9


def test_the_h200_run_with_quest_over_the_fp8_cache():
    """The twenty-second session's `bench decode` on an H200: quest's step over the FP8 cache's
    code bounds beside quest over the fp16 cache and the dense steps, every point in one run."""
    from pathlib import Path

    from tinyserve_core.bench.decode_floor import floor_table

    res = json.loads((Path(__file__).parents[1] / "kernels" / "data" / "bench_decode_h200_22.json").read_text())
    assert "H200" in res["machine"]
    by = {(r["context"], r["batch"]): r for r in res["rows"]}
    assert len(by) == 9 and all(r["quest_fp8_speedup"] == r["quest_ms"] / r["quest_fp8_ms"] for r in by.values())
    r = by[(32768, 64)]
    assert (round(r["quest_fp8_ms"], 2), round(r["quest_ms"], 2), round(r["dense_fp8_ms"], 2)) == (1.77, 1.93, 5.63)
    assert all(by[(c, 64)]["quest_fp8_speedup"] > 1.05 for c in (8192, 16384, 32768))
    assert floor_table(res, False).count("  q fp8 ") == 9


def test_the_h200_run_after_the_fp8_decode_occupancy_change():
    """The twenty-fourth session's `bench decode` on an H200, after the FP8 decode kernel went to
    4 CTAs an SM: the dense step over the FP8 cache 1.69x the fp16 one at 64 x 32K (1.45x in the
    twenty-second session's run, bench_decode_h200_22.json), each pair from the same run."""
    from pathlib import Path

    new, old = ({(r["context"], r["batch"]): r for r in json.loads(
        (Path(__file__).parents[1] / "kernels" / "data" / f"bench_decode_h200_{n}.json").read_text())["rows"]}
        for n in (24, 22))
    assert len(new) == 9 and all(r["fp8_speedup"] == r["dense_ms"] / r["dense_fp8_ms"] for r in new.values())
    assert round(new[(32768, 64)]["dense_fp8_ms"], 2) == 5.01 and round(new[(32768, 64)]["fp8_speedup"], 2) == 1.69
    for ctx in (8192, 16384, 32768):   # batch 64, where the attention stream is most of the step
        assert new[(ctx, 64)]["fp8_speedup"] > old[(ctx, 64)]["fp8_speedup"] + 0.05
