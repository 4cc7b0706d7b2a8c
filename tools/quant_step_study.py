"""Accuracy of twostage's key copy on its two quantisation grids: the shipped one, one step
per (page, kv-head) (`page`: min_i + code * r / L with r = max_i(max_i - min_i)), against
one step per channel (`channel`: min_i + code * (max_i - min_i) / L, shipped until the fifteenth
session, csrc/NOTES.md). With one step a key's estimate is
q.min + step * (q . codes), whose dot product lets the stage-2 kernel keep the query's
fragments in registers instead of building a q * step table per page. `channel` swaps the
torch reference's quantize/dequantize (what `eval selection` runs on a CPU) for the
per-channel form and runs `tinyserve eval selection` with the given arguments; `page` runs
it unchanged.

  python tools/quant_step_study.py {channel|page} <eval selection args...>

docs/BENCHMARKS.md ("ninth session") has the run it was written for."""
import sys

from tinyserve_core.kernels import quant_reference as Q

mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "channel":
    # each channel its own range: page_range returns hi - lo unreduced
    Q.page_range = lambda lo, hi: hi - lo
elif mode != "page":
    raise SystemExit("mode: channel or page")
from tinyserve_core.cli import main
sys.exit(main(["eval", "selection", *sys.argv[2:]]))
