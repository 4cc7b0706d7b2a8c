"""FP8 (e4m3) KV-cache rows of `tinyserve bench kernels` (`--only fp8`).

At each decode shape of the main table (fp16, GQA 32/8, head_dim 128, block 16): paged
decode attention over the FP8 copy of the same cache (per-(page, kv-head) power-of-two
scales, kernels/fp8_reference.py) against our fp16 kernel, both timed in the same run, each
as a share of the copy bandwidth (FP8 moves half the K/V bytes, plus 8 bytes of scales per
page and kv-head); and the accuracy of both outputs against the float32 reference over the
fp16 cache (max / mean absolute error, relative L2 error), on the first sequences of the
batch; at contexts of 8K and more also the selected-pages variant (2,048 tokens of random
pages per sequence and kv-head), fp8 against fp16, and quest's whole step (page bounds,
select, attention over the 2,048 tokens) over the FP8 cache's code bounds against the same
step over the fp16 cache, with the scorers alone, and the selection statistics of that step
(the statistics kernels over each cache; over the FP8 cache also the float32 copy of the table that the
statistics read before their kernel read codes, with its peak memory). Then
reshape_and_cache into an FP8 cache (with and without its page bounds) next to the fp16
write. The peer at each decode shape, when FlashInfer imports: its FP8 decode
(BatchDecodeWithPagedKVCacheWrapper with e4m3 K/V) over the same fp16 cache quantised with one
scale per tensor (amax / 448, what its k_scale / v_scale take), timed in the same run (its
kernel alone: the v_scale multiply it runs as a second op is left out of the time) with its
error against the same float32 reference."""

from __future__ import annotations

import math

import torch

from .kernels import BS, HD, HKV, DecodeCase, _table, bench_ours, flashinfer_wrappers, time_ms

SHAPES = ((1, 4096), (1, 32768), (8, 16384), (8, 32768), (64, 4096), (64, 16384), (64, 32768))
QUICK_SHAPES = ((1, 32768), (64, 4096), (64, 32768))
ACCURACY_SEQS = 4  # sequences of each batch checked against the float32 reference
SPARSE_BUDGET = 2048  # tokens of the selected-pages rows (contexts of 8K and more)


def quantize_pool(cache: torch.Tensor, chunk: int = 4096):
    """The FP8 codes and per-(page, kv-head) scales of a whole fp16 pool, as a write of
    every page in one call would leave them (in chunks of pages: float32 temporaries)."""
    from ..kernels import fp8_reference as f8

    codes = torch.empty(cache.shape, dtype=f8.FP8, device=cache.device)
    scales = torch.empty(cache.shape[0], cache.shape[2], dtype=torch.float32, device=cache.device)
    for s in range(0, cache.shape[0], chunk):
        x = cache[s:s + chunk].float()
        scales[s:s + chunk] = f8.pow2_scale(x.abs().amax(dim=(1, 3)))
        codes[s:s + chunk] = f8.quantize(x, scales[s:s + chunk, None, :, None]).view(f8.FP8)
    return codes, scales


def quantize_pool_per_tensor(cache: torch.Tensor, chunk: int = 4096):
    """The e4m3 codes of a whole fp16 pool under one scale, amax / 448 (a per-tensor FP8 cache:
    what FlashInfer's and vLLM's k_scale / v_scale describe), and that scale."""
    amax = max(cache[s:s + chunk].abs().amax().item() for s in range(0, cache.shape[0], chunk))
    scale = max(amax, 1e-30) / 448.0
    codes = torch.empty(cache.shape, dtype=torch.float8_e4m3fn, device=cache.device)
    for s in range(0, cache.shape[0], chunk):
        codes[s:s + chunk] = (cache[s:s + chunk].float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return codes, scale


def bench_flashinfer_fp8(case: DecodeCase, reps: int, exact: torch.Tensor) -> dict:
    """FlashInfer's FP8 decode over the per-tensor FP8 copy of the case's cache: its time
    (tensor-core wrapper, else its CUDA-core decode when that one fails) and its errors
    against `exact` (the float32 reference of the first sequences)."""
    k8, ks = quantize_pool_per_tensor(case.k)
    v8, vs = quantize_pool_per_tensor(case.v)
    row, err = {}, None
    for tc in (True, False):
        try:
            wrappers = flashinfer_wrappers(case, torch.float8_e4m3fn, tensor_cores=tc)
            out = wrappers[0].run(case.q[0], (k8, v8), k_scale=ks)
        except Exception as e:  # noqa: BLE001 - a path FlashInfer lacks: try the other
            err = f"{type(e).__name__}: {e}"[:200]
            continue
        row["fi_fp8_ms"] = time_ms(lambda i: wrappers[i % case.rot].run(  # noqa: B023
            case.q[i % case.rot], (k8, v8), k_scale=ks), reps)
        row["fi_fp8_path"] = "tensor cores" if tc else "CUDA cores"
        row["fi_fp8"] = _errors(out[: exact.shape[0]].float() * vs, exact)
        break
    if not row:
        row["fi_fp8_error"] = err
    del k8, v8
    return row


def code_bounds(codes: torch.Tensor, fill: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """The page key bounds of an FP8 pool, [NB, 2, Hkv, D] codes: over every slot, or over
    slots 0..fill[p]-1 of page p (`fill`: int [NB]; an empty page's bounds are 0)."""
    from ..kernels import reference

    out = torch.empty(codes.shape[0], 2, *codes.shape[2:], dtype=codes.dtype, device=codes.device)
    if fill is None:
        fill = torch.full((codes.shape[0],), codes.shape[1], dtype=torch.long)
    for s in range(0, codes.shape[0], chunk):
        out[s:s + chunk] = reference.slot_bounds(codes[s:s + chunk].float(), fill[s:s + chunk]).to(codes.dtype)
    return out


def bench_quest_fp8(case: DecodeCase, kc, vc, scales, reps: int, bw: float) -> dict:
    """Quest's step (three launches) over the fp16 cache and over its FP8 copy, and the two
    scorers alone (% of copy bandwidth at their metadata bytes: fp16 [min | max] rows, or
    e4m3 rows plus a float32 K scale a (page, kv-head))."""
    from ..kernels import _cuda_fp8, _cuda_ops

    meta16 = torch.stack([case.k.amin(1), case.k.amax(1)], dim=1)
    meta8 = code_bounds(kc)
    k = SPARSE_BUDGET // BS
    t = lambda i: case.tables[i % case.rot]  # noqa: E731
    q = lambda i: case.q[i % case.rot]  # noqa: E731
    row = {
        "quest_fp16_ms": time_ms(lambda i: _cuda_ops.sparse_decode_attention(
            q(i), case.k, case.v, meta16, t(i), case.seq_lens, case.scale, k, fused=False), reps),
        "quest_fp8_ms": time_ms(lambda i: _cuda_fp8.sparse_decode_attention(
            q(i), kc, vc, meta8, scales, t(i), case.seq_lens, case.scale, k), reps),
        "score_fp16_ms": time_ms(lambda i: _cuda_ops.page_scores(q(i), meta16, t(i), case.seq_lens, case.scale, BS),
                                 reps),
        "score_fp8_ms": time_ms(lambda i: _cuda_fp8.page_scores(q(i), meta8, scales, t(i), case.seq_lens, case.scale,
                                                                BS), reps),
    }
    rows = case.batch * case.pages * HKV
    row["score_fp16_pct_bw"] = 100 * rows * 2 * HD * 2 / row["score_fp16_ms"] / 1e6 / bw
    row["score_fp8_pct_bw"] = 100 * rows * (2 * HD + 4) / row["score_fp8_ms"] / 1e6 / bw
    row.update(bench_stats_fp8(case, kc, vc, meta16, meta8, scales, reps))
    return row


def bench_stats_fp8(case: DecodeCase, kc, vc, meta16, meta8, scales, reps: int) -> dict:
    """Selection statistics of quest's step (its pages and bounds) over the fp16 cache and over
    the FP8 one: the kernel on each cache, and over FP8 the float32 copy of every page of the
    table (fp8_reference.gathered_view) read by the float32 kernel, as before the kernel read
    codes, with the peak memory each FP8 way adds."""
    from ..kernels import _cuda_fp8, _cuda_ops, _cuda_stats, fp8_reference as f8

    k = SPARSE_BUDGET // BS
    t, q, lens = case.tables[0], case.q[0], case.seq_lens
    _, pages16, scores16 = _cuda_ops.sparse_decode_attention(q, case.k, case.v, meta16, t, lens, case.scale, k,
                                                             fused=False)
    _, pages8, scores8 = _cuda_fp8.sparse_decode_attention(q, kc, vc, meta8, scales, t, lens, case.scale, k)

    def view(i):
        keys, bounds, tables = f8.gathered_view(kc, meta8, scales, t)
        return _cuda_stats.selection_stats(q.float(), keys, bounds, tables, lens, case.scale, scores8, pages8)

    def peak_gb(fn):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(0)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 1e9

    native = lambda i: _cuda_stats.selection_stats(q, kc, meta8, t, lens, case.scale, scores8, pages8,  # noqa: E731
                                                   kv_scales=scales)
    return {"stats_fp16_ms": time_ms(lambda i: _cuda_stats.selection_stats(
                q, case.k, meta16, t, lens, case.scale, scores16, pages16), reps),
            "stats_fp8_ms": time_ms(native, reps), "stats_fp8_gb": peak_gb(native),
            "stats_fp8_view_ms": time_ms(view, max(5, reps // 4)), "stats_fp8_view_gb": peak_gb(view)}


def _errors(out: torch.Tensor, exact: torch.Tensor) -> dict:
    d = (out.float() - exact).abs()
    return {"max_abs": d.max().item(), "mean_abs": d.mean().item(),
            "rel_l2": (d.norm() / exact.norm()).item()}


def bench_decode_fp8(case: DecodeCase, reps: int, bw: float, peers: bool = False) -> dict:
    from ..kernels import _cuda_fp8, reference

    kc, ks = quantize_pool(case.k)
    vc, vs = quantize_pool(case.v)
    scales = torch.stack([ks, vs], dim=1).contiguous()  # [NB, 2, Hkv]
    del ks, vs

    def fp8(i):
        r = i % case.rot
        return _cuda_fp8.paged_decode_attention(case.q[r], kc, vc, scales, case.tables[r], case.seq_lens, case.scale)

    row = {"batch": case.batch, "ctx": case.ctx, "fp16_ms": bench_ours(case, reps), "fp8_ms": time_ms(fp8, reps)}
    fp8_bytes = case.kv_bytes // 2 + 2 * case.batch * case.pages * HKV * 4
    row["fp16_pct_bw"] = 100 * case.kv_bytes / row["fp16_ms"] / 1e6 / bw
    row["fp8_pct_bw"] = 100 * fp8_bytes / row["fp8_ms"] / 1e6 / bw
    row["speedup"] = row["fp16_ms"] / row["fp8_ms"]
    n = min(ACCURACY_SEQS, case.batch)
    q, tables, lens = case.q[0][:n], case.tables[0][:n], case.seq_lens[:n]
    exact = reference.paged_decode_attention(q.float(), case.k, case.v, tables, lens, case.scale)
    from ..kernels import _cuda_ops

    row["fp16"] = _errors(_cuda_ops.paged_decode_attention(q, case.k, case.v, tables, lens, case.scale), exact)
    row["fp8"] = _errors(_cuda_fp8.paged_decode_attention(q, kc, vc, scales, tables, lens, case.scale), exact)
    if peers:
        row.update(bench_flashinfer_fp8(case, reps, exact))
        if "fi_fp8_ms" in row:
            row["fi_fp8_pct_bw"] = 100 * (case.kv_bytes // 2) / row["fi_fp8_ms"] / 1e6 / bw
    if case.ctx >= 4 * SPARSE_BUDGET:  # the selected-pages variant: a random budget's worth of pages
        k = SPARSE_BUDGET // BS
        sel = [torch.rand(case.batch, HKV, case.pages, device="cuda").argsort(-1)[..., :k].to(torch.int32)
               for _ in range(case.rot)]
        row["sparse_fp16_ms"] = time_ms(lambda i: _cuda_ops.paged_decode_attention(
            case.q[i % case.rot], case.k, case.v, case.tables[i % case.rot], case.seq_lens, case.scale,
            sel[i % case.rot]), reps)
        row["sparse_fp8_ms"] = time_ms(lambda i: _cuda_fp8.paged_decode_attention(
            case.q[i % case.rot], kc, vc, scales, case.tables[i % case.rot], case.seq_lens, case.scale,
            sel[i % case.rot]), reps)
        row.update(bench_quest_fp8(case, kc, vc, scales, reps, bw))
    return row


def bench_cache_fp8(reps: int, bw: float, gen) -> list[dict]:
    """reshape_and_cache of fp16 K/V into an fp16 cache and into an FP8 one, without and with
    their page bounds (the serving engine's caches keep them)."""
    from ..kernels import _cuda_fp8, _cuda_ops, fp8_reference as f8
    from ..kernels.cache_runs import page_runs

    rows, nb, rot = [], 8192, 8
    for label, tokens, decode in (("prefill 16K tokens", 16384, False), ("decode 256 seqs", 256, True)):
        keys = [torch.randn(tokens, HKV, HD, device="cuda", generator=gen, dtype=torch.float16) for _ in range(rot)]
        vals = [torch.randn_like(k) for k in keys]
        if decode:  # one token per sequence at a random offset of its own block
            blocks = torch.randperm(nb, device="cuda", generator=gen)[: tokens * rot].view(rot, tokens)
            slots = blocks * BS + torch.randint(0, BS, (rot, tokens), device="cuda", generator=gen)
        else:
            slots = torch.stack([torch.arange(tokens, device="cuda") + r * tokens for r in range(rot)]) % (nb * BS)
        row = HKV * HD * 2
        kc = torch.zeros(nb, BS, HKV, HD, device="cuda", dtype=torch.float16)
        vc = torch.zeros_like(kc)
        meta = torch.zeros(nb, 2, HKV, HD, device="cuda", dtype=torch.float16)
        # the given layout is what the op takes with bounds (runs, or one token a page)
        given16 = [{"one_per_page": True} if decode else
                   {"runs": torch.from_numpy(page_runs(slots[r].cpu().numpy(), BS)).cuda()} for r in range(rot)]
        for how, m, layout in (("", None, lambda r: {}), (" + bounds", meta, lambda r: given16[r])):
            ms = time_ms(lambda i: _cuda_ops.reshape_and_cache(keys[i % rot], vals[i % rot], kc, vc, m,  # noqa: B023
                                                               slots[i % rot], **layout(i % rot)), reps)
            rows.append({"case": f"{label}, fp16 cache{how}", "ms": ms, "bytes": 4 * tokens * row,
                         "pct_copy_bw": 100 * 4 * tokens * row / ms / 1e6 / bw})
        del kc, vc, meta
        kc8 = torch.zeros(nb, BS, HKV, HD, device="cuda", dtype=f8.FP8)
        vc8 = torch.zeros_like(kc8)
        sc = torch.zeros(nb, 2, HKV, device="cuda")
        meta8 = torch.zeros(nb, 2, HKV, HD, device="cuda", dtype=f8.FP8)
        pages = tokens if decode else math.ceil(tokens / BS)
        moved = 2 * tokens * row + tokens * row + 2 * pages * HKV * 4 * 2  # read fp16, write fp8, scales
        # the layout the op finds itself (three launches), then the one the caller gives (one launch):
        # a prefill's page runs, a decode step's promise of one token a page
        given = [{"one_per_page": True} if decode else
                 {"runs": torch.from_numpy(page_runs(slots[r].cpu().numpy(), BS)).cuda()} for r in range(rot)]
        for bounds in (None, meta8):
            for how, layout in (("", lambda r: {}), (", one token a page" if decode else ", page runs given",
                                                     lambda r: given[r])):
                ms = time_ms(lambda i: _cuda_fp8.reshape_and_cache(  # noqa: B023
                    keys[i % rot], vals[i % rot], kc8, vc8, sc, slots[i % rot], meta=bounds, **layout(i % rot)),
                    reps)
                rows.append({"case": f"{label}, FP8 cache{' + bounds' if bounds is not None else ''}{how}",
                             "ms": ms, "bytes": moved, "pct_copy_bw": 100 * moved / ms / 1e6 / bw})
        del kc8, vc8, sc, meta8, keys, vals
    return rows


def measure_fp8(reps: int, bw: float, quick: bool = False, progress=None, peers: bool = True) -> dict:
    """The FP8 rows on GPU 0 (the extension built), against copy bandwidth `bw` (GB/s); with
    `peers`, FlashInfer's FP8 decode beside ours when it imports."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    reps = max(5, reps)
    shapes = QUICK_SHAPES if quick else SHAPES
    res = {}
    if peers:
        try:
            import flashinfer

            res["flashinfer_version"] = getattr(flashinfer, "__version__", "unknown")
        except Exception as e:  # noqa: BLE001
            res["flashinfer_error"], peers = f"{type(e).__name__}: {e}"[:300], False
    decode = []
    for b, ctx in (progress(shapes, "fp8 decode") if progress is not None else shapes):
        case = DecodeCase(b, ctx, l2, gen)
        decode.append(bench_decode_fp8(case, reps, bw, peers))
        del case
        torch.cuda.empty_cache()
    return {**res, "decode": decode, "cache": bench_cache_fp8(reps, bw, gen)}


def report_fp8(fp8: dict, bw: float) -> str:
    f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    e = lambda x: f"{x:.2e}"  # noqa: E731
    out = [f"\nFP8 (e4m3) KV cache, per-(page, kv-head) power-of-two scales: decode vs our fp16 kernel at the "
           f"same shapes (% of copy bandwidth {bw:.0f} GB/s; FP8 moves half the K/V bytes); errors of each "
           f"output vs the float32 reference over the fp16 cache (first {ACCURACY_SEQS} sequences)"]
    out.append(_table([[r["batch"], r["ctx"], f(r["fp16_ms"] * 1e3), f(r["fp16_pct_bw"]), f(r["fp8_ms"] * 1e3),
                        f(r["fp8_pct_bw"]), f(r["speedup"], 2), e(r["fp16"]["max_abs"]), e(r["fp8"]["max_abs"]),
                        e(r["fp8"]["mean_abs"]), f(100 * r["fp8"]["rel_l2"], 2)] for r in fp8["decode"]],
                      ["batch", "ctx", "fp16 us", "fp16 %", "fp8 us", "fp8 %", "speedup", "fp16 max err",
                       "fp8 max err", "fp8 mean err", "fp8 rel %"]))
    peer = [r for r in fp8["decode"] if "fi_fp8_ms" in r]
    if peer:
        out.append(f"\nFlashInfer {fp8.get('flashinfer_version', '?')} FP8 decode (e4m3 K/V under one scale per tensor, "
                   "its kernel alone) at the same shapes, same run: ours / FlashInfer time, errors vs the same "
                   "float32 reference")
        out.append(_table([[r["batch"], r["ctx"], f(r["fp8_ms"] * 1e3), f(r["fi_fp8_ms"] * 1e3),
                            f(r.get("fi_fp8_pct_bw")), f(r["fi_fp8_ms"] / r["fp8_ms"], 2), r["fi_fp8_path"],
                            f(100 * r["fp8"]["rel_l2"], 2), f(100 * r["fi_fp8"]["rel_l2"], 2)] for r in peer],
                          ["batch", "ctx", "ours us", "FI us", "FI %", "FI / ours", "FI path", "ours rel %",
                           "FI rel %"]))
    elif fp8.get("flashinfer_error") or any("fi_fp8_error" in r for r in fp8["decode"]):
        why = fp8.get("flashinfer_error") or next(r["fi_fp8_error"] for r in fp8["decode"] if "fi_fp8_error" in r)
        out.append(f"\nFlashInfer FP8 decode: {why}")
    sparse = [r for r in fp8["decode"] if "sparse_fp8_ms" in r]
    if sparse:
        out.append(f"\nSelected-pages attention ({SPARSE_BUDGET} tokens of random pages per sequence and kv-head)")
        out.append(_table([[r["batch"], r["ctx"], f(r["sparse_fp16_ms"] * 1e3), f(r["sparse_fp8_ms"] * 1e3),
                            f(r["sparse_fp16_ms"] / r["sparse_fp8_ms"], 2)] for r in sparse],
                          ["batch", "ctx", "fp16 us", "fp8 us", "speedup"]))
    quest = [r for r in fp8["decode"] if "quest_fp8_ms" in r]
    if quest:
        out.append(f"\nQuest's step ({SPARSE_BUDGET}-token budget: page bounds, select, attention) over each cache, "
                   "x = that cache's dense decode / the step; the scorers alone (% of copy bandwidth at their "
                   "bound bytes)")
        out.append(_table([[r["batch"], r["ctx"], f(r["quest_fp16_ms"] * 1e3), f(r["fp16_ms"] / r["quest_fp16_ms"], 2),
                            f(r["quest_fp8_ms"] * 1e3), f(r["fp8_ms"] / r["quest_fp8_ms"], 2),
                            f(r["quest_fp16_ms"] / r["quest_fp8_ms"], 2), f(r["score_fp16_ms"] * 1e3),
                            f(r["score_fp16_pct_bw"]), f(r["score_fp8_ms"] * 1e3), f(r["score_fp8_pct_bw"])]
                           for r in quest],
                          ["batch", "ctx", "fp16 step us", "x", "fp8 step us", "x", "fp8 speedup", "fp16 score us",
                           "%", "fp8 score us", "%"]))
    stats = [r for r in fp8["decode"] if "stats_fp8_ms" in r]
    if stats:
        out.append("\nSelection statistics of quest's step (one layer): the kernel over each cache; over FP8 also "
                   "the float32 copy of the table it read before (gathered view), with the peak memory each adds")
        out.append(_table([[r["batch"], r["ctx"], f(r["stats_fp16_ms"] * 1e3), f(r["stats_fp8_ms"] * 1e3),
                            f(r["stats_fp8_gb"], 3), f(r["stats_fp8_view_ms"] * 1e3), f(r["stats_fp8_view_gb"], 2),
                            f(r["stats_fp8_view_ms"] / r["stats_fp8_ms"], 1)] for r in stats],
                          ["batch", "ctx", "fp16 us", "fp8 us", "fp8 GB", "fp8 view us", "view GB", "view / fp8"]))
    if fp8.get("cache"):
        out.append("\nreshape_and_cache into fp16 and FP8 caches, % of copy bandwidth (of the K/V bytes; + bounds: "
                   "the page bounds kept too)")
        out.append(_table([[r["case"], f(r["ms"] * 1e3), f(r["pct_copy_bw"])] for r in fp8["cache"]],
                          ["op", "us", "% copy bw"]))
    return "\n".join(out)
