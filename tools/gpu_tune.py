"""Tuning sweep for the decode and scoring kernels (GPU only; run by tools/gpu_check.sh).

Times, in one process and on the same data, the decode kernel with and without
programmatic dependent launch (PDL) and with forced split counts against FlashInfer,
page_scores' CTA size (0 = the automatic choice), select_pages, sparse attention over 2,048
selected tokens, and the whole sparse path (scoring + selection + attention) with and
without PDL. Each variant's output is compared
with the default's. Writes $OUT/tune.json and prints one table."""

from __future__ import annotations

import json
import os
import sys

import torch

from tinyserve_core.bench import kernels as kb
from tinyserve_core.kernels._backend import build


def main() -> int:
    out_dir = os.environ.get("OUT", "out/gpu")
    ext = build()
    gen = torch.Generator(device="cuda").manual_seed(0)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    reps = 30
    bw = kb.copy_bandwidth(reps)
    rows = []
    try:
        import flashinfer  # noqa: F401
        have_fi = True
    except ImportError:
        have_fi = False
    for batch, ctx in ((64, 4096), (64, 16384), (64, 32768), (8, 16384), (8, 32768), (8, 4096), (1, 32768)):
        case = kb.DecodeCase(batch, ctx, l2, gen)
        auto = ext.decode_num_splits(batch, kb.HKV, case.pages * kb.BS, kb.HD)

        def run(i, splits=0):
            r = i % case.rot
            return ext.paged_decode_attention(case.q[r], case.k, case.v, case.tables[r], case.seq_lens,
                                              case.scale, None, splits)
        ref = run(0).float()
        split_opts = sorted({0, 2} if batch >= 64 else {0, auto * 2})
        for splits in split_opts:
            for pdl in (True, False):
                ext.set_pdl(pdl)
                err = ((run(0, splits).float() - ref).norm() / ref.norm()).item()
                ms = kb.time_ms(lambda i: run(i, splits), reps)
                rows.append({"op": "decode", "batch": batch, "ctx": ctx, "splits": splits or auto,
                             "auto": splits == 0, "variant": "pdl" if pdl else "no-pdl", "us": ms * 1e3,
                             "pct": 100 * case.kv_bytes / ms / 1e6 / bw, "rel_err": err})
            ext.set_pdl(True)
        if have_fi:
            ms, _ = kb.bench_flashinfer(case, reps, None)
            rows.append({"op": "decode", "batch": batch, "ctx": ctx, "splits": None, "auto": False,
                         "variant": "flashinfer", "us": ms * 1e3, "pct": 100 * case.kv_bytes / ms / 1e6 / bw,
                         "rel_err": None})
        del case
        torch.cuda.empty_cache()

    for batch in (64, 8, 1):
        case = kb.DecodeCase(batch, 32768, l2, gen)
        meta = torch.empty(case.k.shape[0], 2, kb.HKV, kb.HD, device="cuda", dtype=torch.float16)
        meta[:, 0], meta[:, 1] = case.k.amin(1), case.k.amax(1)
        meta_bytes = batch * kb.HKV * case.pages * 2 * kb.HD * 2
        ref = None
        for ppc in (0, 64, 128, 256):
            def score(i, ppc=ppc):
                r = i % case.rot
                return ext.page_scores(case.q[r], meta, case.tables[r], case.seq_lens, case.scale, kb.BS, ppc)
            s = score(0)
            ref = s if ref is None else ref
            same = bool(torch.equal(s, ref))
            ms = kb.time_ms(score, reps)
            rows.append({"op": "page_scores", "batch": batch, "ctx": 32768, "pages_per_cta": ppc,
                         "us": ms * 1e3, "pct": 100 * meta_bytes / ms / 1e6 / bw, "same": same})
        scores = ref
        ms = kb.time_ms(lambda i: ext.select_pages(scores, 2048 // kb.BS), reps)
        rows.append({"op": "select_pages", "batch": batch, "ctx": 32768, "us": ms * 1e3})
        idx = [ext.select_pages(ext.page_scores(case.q[r], meta, case.tables[r], case.seq_lens, case.scale,
                                                kb.BS, 0), 2048 // kb.BS) for r in range(case.rot)]
        def attend(i):
            r = i % case.rot
            return ext.paged_decode_attention(case.q[r], case.k, case.v, case.tables[r], case.seq_lens,
                                              case.scale, idx[r], 0)
        ms = kb.time_ms(attend, reps)
        rows.append({"op": "sparse_attend", "batch": batch, "ctx": 32768, "us": ms * 1e3})
        def whole(i):  # scoring + selection + attention, as bench kernels times it
            r = i % case.rot
            sc = ext.page_scores(case.q[r], meta, case.tables[r], case.seq_lens, case.scale, kb.BS)
            return ext.paged_decode_attention(case.q[r], case.k, case.v, case.tables[r], case.seq_lens,
                                              case.scale, ext.select_pages(sc, 2048 // kb.BS), 0)
        for pdl in (True, False):
            ext.set_pdl(pdl)
            ms = kb.time_ms(whole, reps)
            rows.append({"op": "sparse_total", "batch": batch, "ctx": 32768, "pdl": pdl, "us": ms * 1e3})
        ext.set_pdl(True)
        del case, meta
        torch.cuda.empty_cache()

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tune.json"), "w") as f:
        json.dump({"copy_gbps": bw, "gpu": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)
    print(f"copy floor {bw:.0f} GB/s on {torch.cuda.get_device_name(0)}")
    for r in rows:
        if r["op"] == "decode":
            err = "" if r["rel_err"] is None else f" err {r['rel_err']:.1e}"
            print(f"decode {r['batch']:>3}x{r['ctx']:>5} v={r['variant']!s:>10} s={r['splits']!s:>4}"
                  f"{'*' if r['auto'] else ' '} {r['us']:8.1f} us {r['pct']:6.1f}%{err}")
        elif r["op"] == "page_scores":
            print(f"scores {r['batch']:>3}x32K ppc={r['pages_per_cta']:>4} {r['us']:8.1f} us {r['pct']:6.1f}% "
                  f"same={r['same']}")
        elif r["op"] == "select_pages":
            print(f"select {r['batch']:>3}x32K {r['us']:8.1f} us")
        elif r["op"] == "sparse_total":
            print(f"total  {r['batch']:>3}x32K pdl={r['pdl']!s:>5} {r['us']:8.1f} us")
        else:
            print(f"attend {r['batch']:>3}x32K {r['us']:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
