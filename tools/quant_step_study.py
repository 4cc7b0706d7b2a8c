"""Accuracy of twostage's key copy with one quantisation step per (page, kv-head) instead
of one per channel: the grid min_i + code * step with step = max_i(max_i - min_i) / L,
where the shipped copy uses (max_i - min_i) / L per channel i. With one step a key's
estimate is q.min + step * (q . codes): an integer dot product scaled once per page, which
lets the stage-2 kernel keep the query's fragments in registers instead of building a
q * step table per page (csrc/NOTES.md, issue 20). This study swaps the torch reference's
quantize/dequantize (what `eval selection` runs on a CPU) for the per-page form and runs
`tinyserve eval selection` with the given arguments; `channel` runs it unchanged.

  python tools/quant_step_study.py {channel|page} <eval selection args...>

docs/BENCHMARKS.md ("ninth session") has the run it was written for."""
import sys

from tinyserve_core.kernels import quant_reference as Q

mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "page":
    _q, _d = Q.quantize, Q.dequantize

    def page_range(lo, hi):
        r = (hi - lo).amax(-1, keepdim=True)          # one range per (page, kv-head)
        return lo, lo + r.expand_as(hi)

    def quantize(keys, lo, hi, bits):
        lo, hi = page_range(lo, hi)
        return _q(keys, lo, hi, bits)

    def dequantize(codes, lo, hi, bits):
        lo, hi = page_range(lo, hi)
        return _d(codes, lo, hi, bits)

    Q.quantize, Q.dequantize = quantize, dequantize
elif mode != "channel":
    raise SystemExit("mode: channel or page")
from tinyserve_core.cli import main
sys.exit(main(["eval", "selection", *sys.argv[2:]]))
