"""How many stage-1 candidates twostage keeps with a candidate top-p (the fewest pages whose
bound softmax reaches p, at most --twostage-candidates x the budget), and at what accuracy:
runs `tinyserve eval selection` with the given arguments and, beside its report, prints the
mean candidate count as a multiple of the budget over every twostage selection of the run.
Stage 2's work (and so the step's extra over quest at 64 x 32K, csrc/NOTES.md fifteenth
session) grows with the candidates, so this says whether the adaptive form could replace
the fixed 4x where the bound is sure.

  python tools/candidate_top_p_study.py <eval selection args...>

docs/BENCHMARKS.md ("fifteenth session") has the run it was written for."""
import atexit
import sys

from tinyserve_core import kernels

_stage1 = kernels.twostage_candidates
totals = {"candidates": 0, "budget": 0, "rows": 0}


def counted(scores, seq_lens, budget, block_size, multiple, top_p, sink_pages, width):
    cand = _stage1(scores, seq_lens, budget, block_size, multiple, top_p, sink_pages, width)
    heads = cand.shape[1]
    totals["candidates"] += int((cand >= 0).sum())
    totals["budget"] += int(budget.sum()) * heads
    totals["rows"] += cand.shape[0] * heads
    return cand


def report():
    if totals["budget"]:
        print(f"candidates: {totals['candidates'] / totals['budget']:.2f}x the budget on average over "
              f"{totals['rows']} (sequence, kv-head) rows")


kernels.twostage_candidates = counted
atexit.register(report)
from tinyserve_core.cli import main  # noqa: E402
sys.exit(main(["eval", "selection", *sys.argv[1:]]))
