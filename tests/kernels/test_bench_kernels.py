"""`tinyserve bench kernels` wiring, checked without a GPU."""

from __future__ import annotations

import argparse

import pytest
import torch

from tinyserve_core.bench import kernels as bench


def _args(*argv):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    bench.add_parser(sub)
    return ap.parse_args(["kernels", *argv])


def test_parser_defaults():
    a = _args("--json", "x.json", "--quick")
    assert a.json == "x.json" and a.quick and a.reps == 30 and a.func is bench.run


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_says_so(capsys):
    assert bench.run(_args()) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_table_aligns_columns():
    t = bench._table([[1, "4096", 12.5], [64, "32768", 3.0]], ["batch", "ctx", "us"])
    lines = t.splitlines()
    assert len({len(x) for x in lines}) == 1 and lines[0].split() == ["batch", "ctx", "us"]
