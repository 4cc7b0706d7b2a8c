"""Page-bound scoring rows of `tinyserve bench kernels` (`--only score`).

At a 32K context (fp16, GQA 32/8, head_dim 128, block 16) and batches 1, 8 and 64: Quest's
page bound over the fp16 min/max rows with the tensor-core kernel (what `page_scores` runs)
against the FMA kernel it replaced (`set_score_mma(False)`), both timed in the same run, and
twostage's stage 1 over the int8 bound copy (`page_scores_copy`, float32 query); each as a
share of the copy bandwidth (the bytes of the rows read), and the share of each row's top
128 pages the two fp16 scorers agree on (the tensor-core kernel's bound is at most
2^-16 sum|q| max|k| looser, csrc/kernels/page_scores_mma.cuh)."""

from __future__ import annotations

import torch

from .kernels import BS, HD, HKV, DecodeCase, _table, time_ms

CTX = 32768
BATCHES = (1, 8, 64)
TOP = 128  # pages compared between the two fp16 scorers (Quest at a 2,048-token budget)


def _top_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    ta = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, a.topk(k, -1).indices, True)
    tb = torch.zeros_like(b, dtype=torch.bool).scatter_(-1, b.topk(k, -1).indices, True)
    return float((ta & tb).sum() / (k * a.shape[0] * a.shape[1]))


def bench_score(batch: int, reps: int, bw: float, l2: int, gen: torch.Generator) -> dict:
    from ..kernels import _backend, bound_copy_reference as bc, quantize_keys

    ext = _backend.build()
    case = DecodeCase(batch, CTX, l2, gen)
    nb = case.k.shape[0]
    meta = torch.stack([case.k.amin(1), case.k.amax(1)], dim=1)
    rows = torch.zeros(nb, HKV, bc.row_bytes(HD), dtype=torch.uint8, device="cuda")
    qkeys = torch.zeros(nb, BS, HKV, HD // 2, dtype=torch.uint8, device="cuda")
    for c0 in range(0, nb, 1 << 16):  # the copy as a write of each page's last token leaves it
        slots = torch.arange(c0, min(nb, c0 + (1 << 16)), device="cuda") * BS + BS - 1
        quantize_keys(case.k, meta, qkeys, slots, rows)
    q32 = [q.float() for q in case.q]

    def score(i):
        r = i % case.rot
        return ext.page_scores(case.q[r], meta, case.tables[r], case.seq_lens, case.scale, BS, 0)

    row = {"batch": batch, "ctx": CTX}
    was = ext.set_score_mma(False)
    try:
        fma = score(0)
        row["fma_ms"] = time_ms(score, reps)
        ext.set_score_mma(True)
        mma = score(0)
        row["mma_ms"] = time_ms(score, reps)
    finally:
        ext.set_score_mma(was)
    row["copy_ms"] = time_ms(lambda i: ext.page_scores_copy(
        q32[i % case.rot], rows, case.tables[i % case.rot], case.seq_lens, case.scale, BS), reps)
    row["top_overlap"] = _top_overlap(mma, fma, TOP)
    fp16_bytes = batch * case.pages * HKV * 2 * HD * 2
    copy_bytes = batch * case.pages * HKV * bc.row_bytes(HD)
    for k, nbytes in (("mma", fp16_bytes), ("fma", fp16_bytes), ("copy", copy_bytes)):
        row[f"{k}_pct_bw"] = 100 * nbytes / row[f"{k}_ms"] / 1e6 / bw
    del case, meta, rows, qkeys
    torch.cuda.empty_cache()
    return row


def measure_score(reps: int, bw: float, quick: bool = False) -> list[dict]:
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    return [bench_score(b, max(5, reps), bw, l2, gen) for b in ((1, 64) if quick else BATCHES)]


def report_score(rows: list[dict], bw: float) -> str:
    f = lambda x, d=1: f"{x:.{d}f}"  # noqa: E731
    head = (f"\nPage bounds at a {CTX // 1024}K context: page_scores on tensor cores (fp16 rows) against the FMA "
            f"kernel, and twostage's stage 1 over the int8 bound copy; % = rows read / time / copy bandwidth "
            f"({bw:.0f} GB/s); top-{TOP} = pages the two fp16 scorers both rank in a row's top {TOP}")
    return head + "\n" + _table(
        [[r["batch"], f(r["mma_ms"] * 1e3), f(r["mma_pct_bw"]), f(r["fma_ms"] * 1e3), f(r["fma_pct_bw"]),
          f(r["fma_ms"] / r["mma_ms"], 2), f(r["copy_ms"] * 1e3), f(r["copy_pct_bw"]), f(100 * r["top_overlap"], 2)]
         for r in rows],
        ["batch", "mma us", "mma %", "FMA us", "FMA %", "FMA/mma", "copy us", "copy %", "top-128 %"])
