"""The CUDA kernels (`tinyserve bench kernels`) against their physical floor and their peers.

Every figure is measured in one run on one GPU: the device-to-device copy bandwidth
(bytes read + written; the floor), paged decode attention (fp16, GQA 32/8, head_dim 128,
block 16) against FlashInfer's BatchDecodeWithPagedKVCacheWrapper (tensor cores) and torch
SDPA (flash backend, enable_gqa) on contiguous K/V, query-aware sparse decode (scoring +
top-k + sparse attention) against our dense decode, reshape_and_cache and copy_blocks as
a share of copy bandwidth, and allocate_blocks against the Python BlockPool (the page-bound
scorers: kernels_score.py; the FP8 cache: kernels_fp8.py).

Timing: CUDA events around each call, all calls queued behind a sleep kernel so the CPU
launch cost stays out of the numbers; median of many repetitions; inputs rotate over
enough copies to exceed L2."""

from __future__ import annotations

import math
import statistics
import time

import torch

from ..kernels.cache_runs import page_runs

HQ, HKV, HD, BS = 32, 8, 128, 16
BATCHES = (1, 8, 64)
SPARSE_BATCHES = (1, 2, 4, 8, 16, 64)  # where one launch stops paying
CONTEXTS = (1024, 4096, 16384, 32768)


# ----------------------------------------------------------------------------- timing
def time_ms(fn, reps: int, setup=None) -> float:
    """Median GPU milliseconds of fn(i); setup(i) runs before each call, outside the events."""
    fn(0)
    if setup:
        setup(0)
    fn(0)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda._sleep(int(50e6))  # ~25 ms: the CPU queues every call before the GPU starts
    for i in range(reps):
        if setup:
            setup(i + 1)
        starts[i].record()
        fn(i + 1)
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


_COPY_BW: dict = {}


def copy_bandwidth(reps: int) -> float:
    """Bytes read + written per second by a large device-to-device copy (GB/s)."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda i: dst.copy_(src), reps)
    del src, dst
    _COPY_BW["gbps"] = 2 * n / ms / 1e6
    return _COPY_BW["gbps"]


# ----------------------------------------------------------------------------- decode
class DecodeCase:
    """A paged pool plus `rot` disjoint batches of block tables (rotation beyond L2)."""

    def __init__(self, batch: int, ctx: int, l2_bytes: int, gen: torch.Generator):
        self.batch, self.ctx = batch, ctx
        self.pages = math.ceil(ctx / BS)
        self.kv_bytes = 2 * batch * ctx * HKV * HD * 2
        self.rot = max(1, min(24, math.ceil(3 * l2_bytes / self.kv_bytes)))
        nb = self.rot * batch * self.pages
        self.k = torch.randn(nb, BS, HKV, HD, device="cuda", generator=gen, dtype=torch.float16)
        self.v = torch.randn(nb, BS, HKV, HD, device="cuda", generator=gen, dtype=torch.float16)
        perm = torch.randperm(nb, device="cuda", generator=gen).to(torch.int32)
        self.tables = perm.view(self.rot, batch, self.pages)
        self.seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
        self.q = [torch.randn(batch, HQ, HD, device="cuda", generator=gen, dtype=torch.float16)
                  for _ in range(self.rot)]
        self.scale = HD ** -0.5


def bench_ours(case: DecodeCase, reps: int) -> float:
    from ..kernels import _cuda_ops as ops

    return time_ms(lambda i: ops.paged_decode_attention(
        case.q[i % case.rot], case.k, case.v, case.tables[i % case.rot], case.seq_lens, case.scale), reps)


def flashinfer_wrappers(case: DecodeCase, kv_dtype=torch.float16, tensor_cores: bool = True) -> list:
    """FlashInfer's BatchDecodeWithPagedKVCacheWrapper planned for each rotated set of the
    case's block tables (fp16 queries; K/V of `kv_dtype`)."""
    import flashinfer

    ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")  # scratch, shared (runs are serial)
    last = case.ctx - (case.pages - 1) * BS
    indptr = torch.arange(case.batch + 1, dtype=torch.int32, device="cuda") * case.pages
    last_len = torch.full((case.batch,), last, dtype=torch.int32, device="cuda")
    wrappers = []
    for r in range(case.rot):  # one plan per rotated set of block tables
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=tensor_cores)
        w.plan(indptr, case.tables[r].reshape(-1).contiguous(), last_len, HQ, HKV, HD, BS,
               q_data_type=torch.float16, kv_data_type=kv_dtype, sm_scale=case.scale)
        wrappers.append(w)
    return wrappers


def bench_flashinfer(case: DecodeCase, reps: int, ref: torch.Tensor | None):
    wrappers = flashinfer_wrappers(case)
    out = wrappers[0].run(case.q[0], (case.k, case.v))
    err = None if ref is None else ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    ms = time_ms(lambda i: wrappers[i % case.rot].run(case.q[i % case.rot], (case.k, case.v)), reps)
    return ms, err


def bench_sdpa(case: DecodeCase, reps: int, gen: torch.Generator):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rot = max(1, min(case.rot, int(8e9 // case.kv_bytes)))
    ks = [torch.randn(case.batch, HKV, case.ctx, HD, device="cuda", generator=gen, dtype=torch.float16)
          for _ in range(rot)]
    vs = [torch.randn_like(k) for k in ks]
    qs = [q.unsqueeze(2) for q in case.q[:rot]]
    backend = "flash"

    def call(i, kind=SDPBackend.FLASH_ATTENTION):
        with sdpa_kernel(kind):
            return F.scaled_dot_product_attention(qs[i % rot], ks[i % rot], vs[i % rot],
                                                  scale=case.scale, enable_gqa=True)
    try:
        call(0)
        ms = time_ms(call, reps)
    except RuntimeError:
        backend = "default"  # flash refused this shape: let torch choose
        ms = time_ms(lambda i: call(i, [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]), reps)
    del ks, vs
    return ms, backend


# ----------------------------------------------------------------------------- sparse
def bench_sparse(batch: int, ctx: int, budget: int, reps: int, l2: int, gen) -> dict:
    """Quest at one batch: the three launches (page_scores, select_pages, decode over the
    pages) and their parts, the one-launch path where the shape fits it, and the path the
    op picks by itself (`kernels.sparse_decode_attention`), against dense decode."""
    from ..kernels import _cuda_ops as ops

    case = DecodeCase(batch, ctx, l2, gen)
    nb = case.k.shape[0]
    meta = torch.empty(nb, 2, HKV, HD, device="cuda", dtype=torch.float16)
    meta[:, 0] = case.k.amin(1)
    meta[:, 1] = case.k.amax(1)
    k_pages = budget // BS

    def run(fused):
        return lambda i: ops.sparse_decode_attention(case.q[i % case.rot], case.k, case.v, meta,
                                                     case.tables[i % case.rot], case.seq_lens, case.scale,
                                                     k_pages, fused=fused)

    def score_only(i):
        r = i % case.rot
        scores = ops.page_scores(case.q[r], meta, case.tables[r], case.seq_lens, case.scale, BS)
        return ops.select_pages(scores, k_pages)

    def attend_only(i):
        r = i % case.rot
        return ops.paged_decode_attention(case.q[r], case.k, case.v, case.tables[r], case.seq_lens,
                                          case.scale, fixed[r])

    fixed = [score_only(r) for r in range(case.rot)]
    dense_ms = bench_ours(case, reps)
    chain_ms = time_ms(run(False), reps)
    splits = ops._extension().sparse_decode_splits(batch, HKV, case.pages, k_pages, BS, HD)
    fused_ms = time_ms(run(True), reps) if splits else None
    auto_ms = time_ms(run(None), reps)
    select_ms = time_ms(score_only, reps)
    attend_ms = time_ms(attend_only, reps)
    # floor: read every page's metadata once plus the selected K/V once
    floor_bytes = batch * HKV * (case.pages * 2 * HD * 2 + budget * 2 * HD * 2)
    bw = _COPY_BW.get("gbps")
    del case, meta
    return {"batch": batch, "ctx": ctx, "budget_tokens": budget, "dense_ms": dense_ms,
            "sparse_3launch_ms": chain_ms, "sparse_1launch_ms": fused_ms, "sparse_1launch_splits": splits,
            "sparse_total_ms": auto_ms, "score_topk_ms": select_ms, "sparse_attend_ms": attend_ms,
            "speedup": dense_ms / auto_ms,
            "pct_copy_bw": None if bw is None else 100 * floor_bytes / auto_ms / 1e6 / bw}


# ----------------------------------------------------------------------------- cache ops
def bench_reshape_and_cache(reps: int, bw: float, gen) -> list[dict]:
    from ..kernels import _cuda_ops as ops

    rows = []
    for label, tokens, decode in (("prefill 16K tokens", 16384, False), ("decode 256 seqs", 256, True)):
        nb = 8192
        kc = torch.randn(nb, BS, HKV, HD, device="cuda", generator=gen, dtype=torch.float16)
        vc = torch.randn_like(kc)
        meta = torch.empty(nb, 2, HKV, HD, device="cuda", dtype=torch.float16)
        rot = 8
        keys = [torch.randn(tokens, HKV, HD, device="cuda", generator=gen, dtype=torch.float16)
                for _ in range(rot)]
        vals = [torch.randn_like(k) for k in keys]
        if decode:  # one token per sequence at a random offset of its own block
            blocks = torch.randperm(nb, device="cuda", generator=gen)[: tokens * rot].view(rot, tokens)
            offs = torch.randint(0, BS, (rot, tokens), device="cuda", generator=gen)
            slots = blocks * BS + offs
        else:
            slots = torch.stack([torch.arange(tokens, device="cuda") + r * tokens for r in range(rot)])
            slots = slots % (nb * BS)
        row = HKV * HD * 2
        # a decode write also through the per-token path (no two tokens share a page), a
        # prefill also with its page runs given (what the engine's prefill passes)
        runs = [None if decode else torch.from_numpy(page_runs(s.cpu().numpy(), BS)).cuda() for s in slots]
        variants = ((False, False, False), (True, False, False)) + (
            ((True, True, False),) if decode else ((True, False, True),))
        for with_meta, one_per_page, given in variants:
            ms = time_ms(lambda i: ops.reshape_and_cache(keys[i % rot], vals[i % rot], kc, vc,
                                                         meta if with_meta else None, slots[i % rot],
                                                         one_per_page=one_per_page,
                                                         runs=runs[i % rot] if given else None), reps)
            pages_touched = math.ceil(tokens / BS) if not decode else tokens
            moved = 4 * tokens * row + (2 * row * pages_touched if with_meta else 0)
            case = label + (" + meta" if with_meta else "") + (", one token per page" if one_per_page else "") + (
                ", page runs given" if given else "")
            rows.append({"case": case, "ms": ms, "bytes": moved, "pct_copy_bw": 100 * moved / ms / 1e6 / bw})
        del kc, vc, meta, keys, vals
    return rows


def bench_copy_blocks(reps: int, bw: float, gen) -> dict:
    from ..kernels import _cuda_ops as ops

    layers, nb, pairs = 16, 2048, 512
    ks = [torch.randn(nb, BS, HKV, HD, device="cuda", generator=gen, dtype=torch.float16) for _ in range(layers)]
    vs = [torch.randn_like(k) for k in ks]
    ms_ = [torch.randn(nb, 2, HKV, HD, device="cuda", generator=gen, dtype=torch.float16) for _ in range(layers)]
    maps = []
    for _ in range(4):
        perm = torch.randperm(nb, device="cuda", generator=gen)
        maps.append(torch.stack([perm[:pairs], perm[pairs:2 * pairs]], 1))
    ms = time_ms(lambda i: ops.copy_blocks(ks, vs, ms_, maps[i % 4]), reps)
    per_pair = layers * (2 * BS * HKV * HD * 2 + 2 * HKV * HD * 2)
    moved = 2 * pairs * per_pair
    del ks, vs, ms_
    return {"case": f"{pairs} pairs x {layers} layers (K,V,meta)", "ms": ms, "bytes": moved,
            "pct_copy_bw": 100 * moved / ms / 1e6 / bw}


def bench_allocate(reps: int) -> dict:
    from ..kernels import _cuda_ops as ops

    n = 1 << 20
    rc = torch.zeros(n, dtype=torch.int32, device="cuda")
    ms = time_ms(lambda i: ops.allocate_blocks(rc, n), reps, setup=lambda i: rc.zero_())
    out = {"blocks": n, "gpu_ms": ms, "gpu_allocs_per_s": n / ms * 1e3}
    try:
        from ..kv import BlockPool
    except ImportError:
        out["python_blockpool"] = "absent"
        return out
    t0 = time.perf_counter()
    pool = BlockPool(n, BS)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = 0
    while got < n - 1:  # one block may be reserved (null block)
        take = min(1024, pool.num_free)
        if take <= 0:
            break
        pool.get_new_blocks(take)
        got += take
    secs = time.perf_counter() - t0
    out.update(python_blocks=got, python_s=secs, python_allocs_per_s=got / secs,
               python_pool_build_s=build, gpu_vs_python=(n / ms * 1e3) / (got / secs))
    return out


# ----------------------------------------------------------------------------- driver
def _table(rows: list[list], header: list[str]) -> str:
    cols = list(zip(*([header] + [[str(c) for c in r] for r in rows])))
    w = [max(len(c) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def report(res: dict) -> str:
    """The tables of one run (as written to JSON): also `--report FILE` without a GPU."""
    f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    us = lambda r, k: f(r[k] * 1e3) if r.get(k) is not None else "-"  # noqa: E731
    from ..kernels.tuning import describe

    bw, out = res["copy_bw_gbps"], []
    sh = res["shape"]
    if res.get("tuning"):
        out.append(describe(res["tuning"]))
    if res.get("decode"):
        out.append(f"Paged decode fp16, GQA {sh['hq']}/{sh['hkv']}, head_dim {sh['head_dim']}, block "
                   f"{sh['block']} on {res['gpu']}; % = K/V bytes / time / copy bandwidth ({bw:.0f} GB/s); "
                   f"torch {res.get('torch', '?')}, FlashInfer {res.get('flashinfer_version', 'absent')}")
        out.append(_table([[r["batch"], r["ctx"], r["splits"], us(r, "ours_ms"), f(r.get("ours_pct_bw")),
                            us(r, "flashinfer_ms"), f(r.get("flashinfer_pct_bw")), us(r, "sdpa_ms"),
                            f(r.get("sdpa_pct_bw"))] for r in res["decode"]],
                          ["batch", "ctx", "splits", "ours us", "ours %", "FI us", "FI %", "SDPA us", "SDPA %"]))
        if res.get("flashinfer_error"):
            out.append(f"FlashInfer: {res['flashinfer_error']}")
    if res.get("sparse"):
        out.append("\nQuery-aware sparse decode, 32K context, 2048-token budget: three launches (score + "
                   "select, attend) or one; total = the path the op picks; % = (all page metadata + selected "
                   "K/V) / time / copy bandwidth")
        out.append(_table([[r["batch"], us(r, "dense_ms"), us(r, "score_topk_ms"), us(r, "sparse_attend_ms"),
                            us(r, "sparse_3launch_ms"), us(r, "sparse_1launch_ms"), us(r, "sparse_total_ms"),
                            f(r.get("pct_copy_bw")), f(r["speedup"], 2)] for r in res["sparse"]],
                          ["batch", "dense us", "score+select us", "attend us", "3 launches us", "1 launch us",
                           "total us", "total %", "speedup"]))
    cache = res.get("reshape_and_cache", []) + ([res["copy_blocks"]] if res.get("copy_blocks") else [])
    if cache:
        out.append(f"\nCache ops, % of copy bandwidth ({bw:.0f} GB/s)")
        out.append(_table([[r["case"], us(r, "ms"), f(r["pct_copy_bw"])] for r in cache],
                          ["op", "us", "% copy bw"]))
    a = res.get("allocate_blocks")
    if a:
        out.append(f"\nallocate_blocks: {a['blocks']} blocks in {a['gpu_ms'] * 1e3:.0f} us = "
                   f"{a['gpu_allocs_per_s'] / 1e9:.2f} G allocs/s"
                   + (f"; Python BlockPool {a['python_allocs_per_s'] / 1e6:.2f} M allocs/s "
                      f"({a['gpu_vs_python']:.0f}x)" if "python_allocs_per_s" in a else ""))
    return "\n".join(out)


def measure_kernels(reps: int = 30, quick: bool = False, peers: bool = True, only=None,
                    log=None, progress=None) -> dict:
    """Every figure of the benchmark on GPU 0 (needs CUDA). `log(line)` hears the copy
    bandwidth as soon as it is known; `progress(iterable, desc)` wraps the decode-shape
    loop (tqdm's signature)."""
    from ..kernels import _backend, _cuda_ops as ops, tuning

    _backend.build()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    reps = max(5, reps)
    res = {"gpu": props.name, "sms": props.multi_processor_count, "l2_bytes": l2,
           "torch": torch.__version__, "shape": {"hq": HQ, "hkv": HKV, "head_dim": HD, "block": BS},
           "tuning": tuning.applied()}
    bw = copy_bandwidth(reps)
    res["copy_bw_gbps"] = bw
    if log is not None:
        log(f"{props.name}: copy bandwidth {bw:.0f} GB/s (read + write)")

    fi_error = None
    if peers:
        try:
            import flashinfer

            res["flashinfer_version"] = getattr(flashinfer, "__version__", "unknown")
        except Exception as e:  # noqa: BLE001
            fi_error = f"{type(e).__name__}: {e}"
    only = set(only or ("decode", "sparse", "cache", "alloc"))
    batches = (1, 64) if quick else BATCHES
    contexts = (4096, 32768) if quick else CONTEXTS
    decode = []
    shapes = [(b, c) for b in batches for c in contexts] if "decode" in only else []
    for b, ctx in (progress(shapes, "paged decode") if progress is not None else shapes):
        case = DecodeCase(b, ctx, l2, gen)
        row = {"batch": b, "ctx": ctx, "kv_bytes": case.kv_bytes,
               "splits": ops.decode_num_splits(b, HKV, case.pages * BS, HD)}
        row["ours_ms"] = bench_ours(case, reps)
        ours_out = ops.paged_decode_attention(case.q[0], case.k, case.v, case.tables[0], case.seq_lens, case.scale)
        if peers and fi_error is None:
            try:
                row["flashinfer_ms"], row["flashinfer_vs_ours_relerr"] = bench_flashinfer(case, reps, ours_out)
            except Exception as e:  # noqa: BLE001
                fi_error = f"{type(e).__name__}: {e}"[:300]
        if peers:
            try:
                row["sdpa_ms"], row["sdpa_backend"] = bench_sdpa(case, reps, gen)
            except Exception as e:  # noqa: BLE001
                row["sdpa_error"] = f"{type(e).__name__}: {e}"[:300]
        for k in ("ours", "flashinfer", "sdpa"):
            if f"{k}_ms" in row:
                row[f"{k}_pct_bw"] = 100 * case.kv_bytes / row[f"{k}_ms"] / 1e6 / bw
        decode.append(row)
        del case
        torch.cuda.empty_cache()
    res["decode"] = decode
    res["flashinfer_error"] = fi_error if peers else "skipped (--no-peers)"

    sparse = [bench_sparse(b, 32768, 2048, reps, l2, gen)
              for b in ((1, 64) if quick else SPARSE_BATCHES)] if "sparse" in only else []
    torch.cuda.empty_cache()
    res["sparse"] = sparse
    if "cache" in only:
        res["reshape_and_cache"] = bench_reshape_and_cache(reps, bw, gen)
        torch.cuda.empty_cache()
        res["copy_blocks"] = bench_copy_blocks(reps, bw, gen)
        torch.cuda.empty_cache()
    if "alloc" in only:
        res["allocate_blocks"] = bench_allocate(max(5, reps // 3))

    return res
