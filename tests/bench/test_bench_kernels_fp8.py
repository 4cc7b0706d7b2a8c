"""`tinyserve bench kernels --only fp8` wiring and its helpers, checked without a GPU."""

from __future__ import annotations

import torch

from tinyserve_core.bench import kernels_fp8
from tinyserve_core.cli import bench as bench_cli, build_parser
from tinyserve_core.kernels import fp8_reference as f8


def test_only_fp8_is_a_section_left_out_of_the_default():
    a = build_parser().parse_args(["bench", "kernels", "--only", "fp8", "--quick"])
    assert a.only == ["fp8"]


def test_quantize_pool_is_a_one_call_write_of_every_page():
    torch.manual_seed(0)
    nb, bs, hkv, d = 5, 16, 2, 32
    pool = (torch.randn(nb, bs, hkv, d) * torch.tensor([0.01, 5.0]).view(1, 1, 2, 1)).half()
    codes, scales = kernels_fp8.quantize_pool(pool, chunk=2)  # chunks must not change a thing
    kc = torch.zeros(nb, bs, hkv, d, dtype=f8.FP8)
    sc = torch.zeros(nb, 2, hkv)
    f8.reshape_and_cache(pool.flatten(0, 1), pool.flatten(0, 1), kc, kc.clone(), sc, torch.arange(nb * bs))
    assert torch.equal(codes.view(torch.uint8), kc.view(torch.uint8)) and torch.equal(scales, sc[:, 0])


def test_quantize_pool_per_tensor_is_one_scale_at_full_range():
    torch.manual_seed(2)
    pool = (torch.randn(6, 16, 2, 32) * torch.tensor([0.01, 5.0]).view(1, 1, 2, 1)).half()
    codes, scale = kernels_fp8.quantize_pool_per_tensor(pool, chunk=4)
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == pool.shape
    assert scale == pool.abs().max().item() / 448.0
    assert codes.float().abs().max().item() == 448.0    # the largest value lands on e4m3's largest code
    back = codes.float() * scale
    big = pool.float().abs() > 64 * scale              # normal codes: 3 mantissa bits, relative error <= 1/16
    assert ((back - pool.float()).abs()[big] <= pool.float().abs()[big] / 16).all()


def test_report_prints_the_flashinfer_fp8_rows():
    err = {"max_abs": 1.5e-3, "mean_abs": 2e-4, "rel_l2": 0.0385}
    row = {"batch": 64, "ctx": 32768, "fp16_ms": 1.9, "fp8_ms": 1.0, "fp16_pct_bw": 105.0, "fp8_pct_bw": 98.0,
           "speedup": 1.9, "fp16": err, "fp8": err, "fi_fp8_ms": 1.4, "fi_fp8_pct_bw": 72.0,
           "fi_fp8_path": "tensor cores", "fi_fp8": {**err, "rel_l2": 0.0381}}
    out = kernels_fp8.report_fp8({"flashinfer_version": "0.2.14.post1", "decode": [row], "cache": []}, 4250.0)
    assert "FlashInfer 0.2.14.post1 FP8 decode" in out
    line = [x.split() for x in out.split("FlashInfer 0.2.14")[1].splitlines() if x.split()[:2] == ["64", "32768"]][0]
    assert line[2:6] == ["1000.0", "1400.0", "72.0", "1.40"] and line[-2:] == ["3.85", "3.81"]
    # no peer: the reason is printed instead of a table
    bare = {k: v for k, v in row.items() if not k.startswith("fi_")}
    out = kernels_fp8.report_fp8({"flashinfer_error": "ModuleNotFoundError: flashinfer", "decode": [bare],
                                  "cache": []}, 4250.0)
    assert "FlashInfer FP8 decode: ModuleNotFoundError" in out


def test_code_bounds_are_what_writing_full_pages_leaves():
    torch.manual_seed(1)
    nb, bs, hkv, d = 5, 16, 2, 32
    pool = torch.randn(nb, bs, hkv, d).half()
    codes, _ = kernels_fp8.quantize_pool(pool)
    kc, meta = torch.zeros(nb, bs, hkv, d, dtype=f8.FP8), torch.zeros(nb, 2, hkv, d, dtype=f8.FP8)
    f8.reshape_and_cache(pool.flatten(0, 1), pool.flatten(0, 1), kc, kc.clone(), torch.zeros(nb, 2, hkv),
                         torch.arange(nb * bs), meta=meta)
    assert torch.equal(kernels_fp8.code_bounds(codes, chunk=2).float(), meta.float())
    # partly filled pages (bench decode's last pages): the bounds of their first `fill` slots
    fill = torch.tensor([16, 3, 0, 1, 9])
    slots = torch.cat([torch.arange(n) + p * bs for p, n in enumerate(fill.tolist())])
    kc, meta = torch.zeros(nb, bs, hkv, d, dtype=f8.FP8), torch.zeros(nb, 2, hkv, d, dtype=f8.FP8)
    x = pool.flatten(0, 1)[slots]
    f8.reshape_and_cache(x, x, kc, kc.clone(), torch.zeros(nb, 2, hkv), slots, meta=meta)
    assert torch.equal(kernels_fp8.code_bounds(kc, fill, chunk=2).float(), meta.float())


def test_report_prints_the_quest_rows_over_each_cache():
    err = {"max_abs": 1.5e-3, "mean_abs": 2e-4, "rel_l2": 0.031}
    row = {"batch": 64, "ctx": 32768, "fp16_ms": 2.0, "fp8_ms": 1.2, "fp16_pct_bw": 99.0, "fp8_pct_bw": 90.2,
           "speedup": 1.67, "fp16": err, "fp8": err, "sparse_fp16_ms": 0.14, "sparse_fp8_ms": 0.08,
           "quest_fp16_ms": 0.25, "quest_fp8_ms": 0.16, "score_fp16_ms": 0.125, "score_fp16_pct_bw": 98.5,
           "score_fp8_ms": 0.075, "score_fp8_pct_bw": 83.0}
    out = kernels_fp8.report_fp8({"decode": [row], "cache": []}, 4250.0)
    line = [x.split() for x in out.split("Quest's step")[1].splitlines() if x.split()[:2] == ["64", "32768"]][0]
    assert line[2:] == ["250.0", "8.00", "160.0", "7.50", "1.56", "125.0", "98.5", "75.0", "83.0"]


def test_report_prints_the_statistics_rows_over_each_cache():
    err = {"max_abs": 1.5e-3, "mean_abs": 2e-4, "rel_l2": 0.031}
    row = {"batch": 8, "ctx": 32768, "fp16_ms": 0.25, "fp8_ms": 0.17, "fp16_pct_bw": 99.0, "fp8_pct_bw": 80.0,
           "speedup": 1.47, "fp16": err, "fp8": err, "stats_fp16_ms": 0.2, "stats_fp8_ms": 0.125,
           "stats_fp8_gb": 0.0021, "stats_fp8_view_ms": 2.5, "stats_fp8_view_gb": 4.5}
    out = kernels_fp8.report_fp8({"decode": [row], "cache": []}, 4250.0)
    assert "Quest's step" not in out   # rows without the quest figures print no quest table
    line = [x.split() for x in out.split("Selection statistics")[1].splitlines() if x.split()[:2] == ["8", "32768"]]
    assert line[0][2:] == ["200.0", "125.0", "0.002", "2500.0", "4.50", "20.0"]


def test_report_prints_the_fp8_rows():
    err = {"max_abs": 1.5e-3, "mean_abs": 2e-4, "rel_l2": 0.031}
    row = {"batch": 64, "ctx": 32768, "fp16_ms": 2.0, "fp8_ms": 1.1, "fp16_pct_bw": 99.0, "fp8_pct_bw": 90.2,
           "speedup": 1.82, "fp16": err, "fp8": err, "sparse_fp16_ms": 0.14, "sparse_fp8_ms": 0.08}
    res = {"copy_bw_gbps": 4250.0, "shape": {"hq": 32, "hkv": 8, "head_dim": 128, "block": 16},
           "fp8": {"decode": [row], "cache": [{"case": "decode 256 seqs, FP8 cache", "ms": 0.01, "pct_copy_bw": 40.0}]}}
    out = bench_cli._kernels_report(res)
    assert "FP8 (e4m3) KV cache" in out and "decode 256 seqs, FP8 cache" in out
    line = next(x for x in out.splitlines() if x.split()[:2] == ["64", "32768"])
    assert line.split()[2:8] == ["2000.0", "99.0", "1100.0", "90.2", "1.82", "1.50e-03"]
    sparse = [x.split() for x in out.splitlines() if x.split()[:2] == ["64", "32768"]][1]
    assert sparse[2:] == ["140.0", "80.0", "1.75"]


def test_report_of_the_h200_fp8_write_run(capsys):
    """The twentieth session's `bench kernels --only fp8` on an H200: the FP8 write in one launch
    when the caller gives its page runs (prefill) or one token a page (decode), against the
    three launches that find the layout themselves, and the fp16 write, in the same run."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "kernels" / "data" / "bench_h200_fp8_20.json"
    assert bench_cli.run_kernels(build_parser().parse_args(["bench", "kernels", "--report", str(data)])) == 0
    out = capsys.readouterr().out
    us = {line.rsplit(None, 2)[0].strip(): float(line.split()[-2]) for line in out.split("reshape_and_cache into")[1]
          .splitlines() if "cache" in line and line.split()[-1].replace(".", "").isdigit()}
    assert us["prefill 16K tokens, FP8 cache, page runs given"] == 36.9
    assert us["prefill 16K tokens, FP8 cache"] == 97.3 and us["decode 256 seqs, FP8 cache, one token a page"] == 8.0


def test_report_of_the_h200_fp8_decode_run(capsys):
    """The twenty-first session's `bench kernels --only fp8` on an H200, after the page scales
    became asynchronous copies in the tile's copy group: FP8 decode 1.53x the fp16 kernel at
    64 x 32K (1.17x in the twentieth session's run, bench_h200_fp8_20.json), same run as its fp16 peer."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "kernels" / "data" / "bench_h200_fp8_21.json"
    assert bench_cli.run_kernels(build_parser().parse_args(["bench", "kernels", "--report", str(data)])) == 0
    out = capsys.readouterr().out
    rows = {(int(p[0]), int(p[1])): (float(p[2]), float(p[4]), float(p[6]))
            for p in (line.split() for line in out.split("Selected-pages")[0].splitlines())
            if len(p) > 6 and p[0].isdigit() and p[1].isdigit()}
    assert rows[(64, 32768)] == (1887.6, 1236.6, 1.53)
    assert rows[(8, 32768)] == (246.4, 166.2, 1.48)
    assert all(speedup > 1.2 for _, _, speedup in rows.values())


def test_report_of_the_h200_fp8_quest_run(capsys):
    """The twenty-second session's `bench kernels --only fp8` on an H200: quest over the FP8
    cache's code bounds, its step 1.38x faster than quest over the fp16 cache at 64 x 32K
    (both steps and both scorers in the same run), and the FP8 write keeping the bounds."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "kernels" / "data" / "bench_h200_fp8_22.json"
    assert bench_cli.run_kernels(build_parser().parse_args(["bench", "kernels", "--report", str(data)])) == 0
    out = capsys.readouterr().out
    quest = {(int(p[0]), int(p[1])): [float(x) for x in p[2:]]
             for p in (line.split() for line in out.split("Quest's step")[1].split("reshape_and_cache")[0].splitlines())
             if len(p) == 11 and p[0].isdigit()}
    assert quest[(64, 32768)] == [268.5, 7.03, 194.0, 6.35, 1.38, 129.7, 97.8, 88.6, 72.8]
    assert quest[(1, 32768)][2] == 17.7 and all(r[4] > 1.2 for k, r in quest.items() if k[0] > 1)
    us = {line.rsplit(None, 2)[0].strip(): float(line.split()[-2]) for line in out.split("reshape_and_cache into")[1]
          .splitlines() if "cache" in line and line.split()[-1].replace(".", "").isdigit()}
    assert us["prefill 16K tokens, FP8 cache + bounds, page runs given"] == 41.8
    assert us["decode 256 seqs, FP8 cache + bounds, one token a page"] == 9.9


def test_report_of_the_h200_statistics_run(capsys):
    """The twenty-third session's `bench kernels --only fp8` on an H200: the statistics kernels
    read the FP8 codes at a few MB of scratch, where the float32 copy of the table they read
    before peaked at 19 GB and took 5-10x as long, in the same run."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "kernels" / "data" / "bench_h200_fp8_23.json"
    assert bench_cli.run_kernels(build_parser().parse_args(["bench", "kernels", "--report", str(data)])) == 0
    out = capsys.readouterr().out.split("Selection statistics")[1].split("reshape_and_cache")[0]
    rows = [x.split() for x in out.splitlines() if x.split() and x.split()[0].isdigit()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(1, 32768), (8, 16384), (8, 32768), (64, 16384), (64, 32768)]
    for r in rows:
        fp8_us, fp8_gb, view_us, view_gb = float(r[3]), float(r[4]), float(r[5]), float(r[6])
        assert view_us > 5 * fp8_us and fp8_gb < 0.05 < view_gb, r
    assert float(rows[-1][6]) > 19   # the old way's peak at 64 x 32K


def test_report_of_the_h200_fp8_occupancy_run(capsys):
    """The twenty-fourth session's `bench kernels --only fp8` on an H200: the FP8 decode kernel at
    4 CTAs an SM (3 stages a warp) streams 64 x 32K at 98% of the copy bandwidth (83% at 2 CTAs,
    bench_h200_fp8_23.json), and FlashInfer's FP8 decode, measured in the same run over the same
    cache quantised per tensor, is 1.3-1.6x slower at every shape with the same error."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "kernels" / "data" / "bench_h200_fp8_24.json"
    assert bench_cli.run_kernels(build_parser().parse_args(["bench", "kernels", "--report", str(data)])) == 0
    out = capsys.readouterr().out
    assert "FlashInfer 0.2.14.post1 FP8 decode" in out
    peer = {(int(p[0]), int(p[1])): p for p in (line.split() for line in
            out.split("FlashInfer 0.2.14.post1 FP8")[1].split("Selected-pages")[0].splitlines())
            if len(p) == 10 and p[0].isdigit()}
    assert len(peer) == 7
    for p in peer.values():
        ours_us, fi_us, ratio, ours_err, fi_err = float(p[2]), float(p[3]), float(p[5]), float(p[8]), float(p[9])
        assert fi_us > 1.3 * ours_us and ratio > 1.3 and abs(ours_err - fi_err) < 0.25, p
    dense = {(int(p[0]), int(p[1])): p for p in (line.split() for line in out.split("FlashInfer 0.2.14")[0].splitlines())
             if len(p) == 11 and p[0].isdigit()}
    assert dense[(64, 32768)][4:7] == ["1038.8", "97.9", "1.83"]
