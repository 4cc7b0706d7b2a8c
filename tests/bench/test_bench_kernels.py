"""`tinyserve bench kernels` wiring, checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.bench import kernels as bench
from tinyserve_core.cli import bench as bench_cli, build_parser


def _args(*argv):
    return build_parser().parse_args(["bench", "kernels", *argv])


def test_parser_defaults():
    a = _args("--json", "x.json", "--quick")
    assert a.json == "x.json" and a.quick and a.reps == 30 and a.func is bench_cli.run_kernels


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_says_so(capsys):
    assert bench_cli.run_kernels(_args()) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_table_aligns_columns():
    t = bench._table([[1, "4096", 12.5], [64, "32768", 3.0]], ["batch", "ctx", "us"])
    lines = t.splitlines()
    assert len({len(x) for x in lines}) == 1 and lines[0].split() == ["batch", "ctx", "us"]


DATA = __import__("pathlib").Path(__file__).parents[1] / "kernels" / "data"


def _decode_rows(out: str) -> list[list[str]]:
    """The decode table's shape rows (the sections after it have rows of their own)."""
    head = out.split("Query-aware sparse decode")[0]
    rows = [line.split() for line in head.splitlines() if line.strip().startswith(("1 ", "8 ", "64 "))]
    return [r for r in rows if len(r) == 9]


def test_report_of_the_h100_run(capsys):
    """The stored H100 run (tests/kernels/data) prints every section with its floor and peers."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h100_full.json"))) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100" in out and "copy bandwidth (3004 GB/s)" in out
    assert len(_decode_rows(out)) == 12  # 3 batches x 4 contexts, ours + FI + SDPA
    for section in ("Query-aware sparse decode", "Cache ops", "allocate_blocks"):
        assert section in out


def test_report_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"not": "a bench"}')
    from tinyserve_core.errors import InputFileError

    with pytest.raises(InputFileError, match="x.json"):
        bench_cli.run_kernels(_args("--report", str(bad)))


def test_report_of_the_h200_run(capsys):
    """The stored H200 run (sixth session, FlashInfer 0.2.14.post1 in the same run) prints its
    tuning row, every decode shape with both peers, and the cache write's runs path."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_full.json"))) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "FlashInfer 0.2.14.post1" in out and "tuning row NVIDIA H200" in out
    assert len(_decode_rows(out)) == 12
    assert "page runs given" in out


def test_report_of_the_h200_sparse_run(capsys):
    """The eleventh session's run: the sparse table gives the three launches, the one launch
    (none where its grid does not fit) and the op's choice per batch."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_sparse.json"))) == 0
    out = capsys.readouterr().out
    assert "sparse_fused_max_batch 0" in out and "1 launch us" in out
    rows = {r[0]: r for r in (line.split() for line in out.split("Query-aware sparse decode")[1].splitlines())
            if r and r[0].isdigit()}
    assert list(rows) == ["1", "2", "4", "8", "16", "64"]
    assert rows["1"][4:7] == ["22.3", "35.9", "21.8"] and rows["64"][5] == "-"


def test_report_of_the_h200_scoring_run(capsys):
    """The eighteenth session's run: the page-bound table gives the tensor-core scorer against the
    FMA kernel measured in the same run, the bound copy beside them, and their top-128 agreement."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_18.json"))) == 0
    out = capsys.readouterr().out
    assert "FlashInfer 0.2.14.post1" in out and len(_decode_rows(out)) == 12
    rows = {r[0]: r for r in (line.split() for line in out.split("Page bounds at a 32K context")[1].splitlines())
            if r and r[0].isdigit()}
    assert list(rows) == ["1", "8", "64"]
    assert rows["64"][1] == "135.7" and rows["64"][3] == "143.9" and rows["64"][5] == "1.06"
    assert all(float(r[8]) >= 99.9 for r in rows.values())


def test_report_of_the_h200_staged_scoring_run(capsys):
    """The nineteenth session's run: page_scores with its rows staged in shared memory against
    the FMA kernel, and the sparse step it feeds (7.03x dense at batch 64, 2.32x at batch 1)."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_19.json"))) == 0
    out = capsys.readouterr().out
    rows = {r[0]: r for r in (line.split() for line in out.split("Page bounds at a 32K context")[1].splitlines())
            if r and r[0].isdigit()}
    assert rows["64"][1] == "129.2" and rows["64"][3] == "143.9" and rows["64"][5] == "1.11"
    assert all(float(r[8]) >= 99.9 for r in rows.values())
    table = out.split("Query-aware sparse decode")[1].split("Page bounds")[0]
    sparse = {r[0]: r for r in (line.split() for line in table.splitlines()) if r and r[0].isdigit()}
    assert sparse["64"][-1] == "7.03" and sparse["1"][-1] == "2.32"


def test_report_of_the_h200_run_of_the_twenty_fifth_session(capsys):
    """The twenty-fifth session's run (resident_ctas shared by the split plans): ahead of
    FlashInfer at all 12 decode shapes, behind SDPA on contiguous K/V at none but one (8 x 32K,
    a tie); the sparse step 7.07x dense at batch 64 and 2.34x at batch 1."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_25.json"))) == 0
    out = capsys.readouterr().out
    assert "FlashInfer 0.2.14.post1" in out
    table = out.split("Paged decode fp16")[1].split("Query-aware sparse decode")[0]
    dec = [r for r in (line.split() for line in table.splitlines()) if r and r[0].isdigit()]
    assert len(dec) == 12 and all(float(r[3]) < float(r[5]) for r in dec)
    assert [(r[0], r[1]) for r in dec if float(r[3]) >= float(r[7])] == [("8", "32768")]
    table = out.split("Query-aware sparse decode")[1].split("Cache ops")[0]
    sparse = {r[0]: r for r in (line.split() for line in table.splitlines()) if r and r[0].isdigit()}
    assert sparse["64"][-1] == "7.07" and sparse["1"][-1] == "2.34" and sparse["64"][1] == "1934.1"


def test_report_of_the_h200_one_round_merge_run(capsys):
    """The twentieth session's run: the split merge in one round of loads. Ahead of FlashInfer at
    all 12 decode shapes, batch 1 by 8-20%; the sparse step 2.29x dense at batch 1, 7.06x at 64."""
    assert bench_cli.run_kernels(_args("--report", str(DATA / "bench_h200_20.json"))) == 0
    out = capsys.readouterr().out
    table = out.split("Paged decode fp16")[1].split("Query-aware sparse decode")[0]
    dec = [r for r in (line.split() for line in table.splitlines()) if r and r[0].isdigit()]
    assert len(dec) == 12 and all(float(r[3]) < float(r[5]) for r in dec)
    assert [r[3] for r in dec if r[0] == "1"] == ["10.3", "13.9", "26.4", "41.2"]
    table = out.split("Query-aware sparse decode")[1].split("Cache ops")[0]
    sparse = {r[0]: r for r in (line.split() for line in table.splitlines()) if r and r[0].isdigit()}
    assert sparse["64"][-1] == "7.06" and sparse["1"][-1] == "2.29" and sparse["1"][4] == "17.8"
