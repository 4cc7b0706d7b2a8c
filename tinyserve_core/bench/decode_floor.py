"""The floor of a decode step and where the rest goes (`tinyserve bench decode`).

A decode step must read every weight once and the KV it attends to once, so its floor
is those bytes at the device's copy bandwidth, measured in the same run with one large
device-to-device copy (read + write bytes over its time). A row's `vs_floor` is the
step time over that floor.

`--breakdown` runs one eager step under torch.profiler and sorts its GPU kernels into
GEMM, attention (paged decode + cache write), scoring+selection and norms/rotary/
elementwise; `host_gap` is the graph step's time minus the GPU busy time, the part of
the step in which the GPU waits for the host or for launches. On a CPU there are no
kernels: the CPU ops are sorted the same way (the torch reference attention then counts
as elementwise and GEMM), which only checks the command runs."""

from __future__ import annotations

import contextlib
import re
import time

import torch

CATEGORIES = ("gemm", "attention", "selection", "elementwise")
_PATTERNS = (  # first match wins
    ("selection", re.compile(r"page_scores|select_pages|page_estimates|quantize_keys|topk|sort|radix", re.I)),
    ("attention", re.compile(r"paged_decode|combine|reshape_and_cache|cache_write|attention|sdpa|flash", re.I)),
    ("gemm", re.compile(r"gemm|gemv|skinny|nvjet|cutlass|cublas|splitk|xmma|aten::(?:mm|addmm|bmm|linear|matmul)$", re.I)),
)


def category(name: str) -> str:
    for cat, pattern in _PATTERNS:
        if pattern.search(name):
            return cat
    return "elementwise"


def time_once(fn, cuda: bool) -> float:
    """Seconds of one call of `fn`: CUDA events around it on a GPU (the host's share
    before its first launch counts: the GPU waits for it), perf_counter on a CPU."""
    if not cuda:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1000


def copy_bandwidth(device: torch.device, nbytes: int | None = None, reps: int = 10) -> float:
    """Bytes/s of a device-to-device copy (read + write counted), the best of `reps`."""
    cuda = device.type == "cuda"
    nbytes = nbytes or ((1 << 30) if cuda else (64 << 20))
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).fill_(1)
    dst = torch.empty_like(src)
    best = min(time_once(lambda: dst.copy_(src), cuda) for _ in range(reps + 2))
    return 2 * nbytes / best


def step_bytes(model, runner, context: int, batch: int, policy: str, budget: int) -> dict[str, int]:
    """The fewest bytes one decode step moves: each weight once (the embedding: only the
    batch's rows), the KV it attends (dense: the whole context; quest: its budget of
    pages) and, for quest, the page digests it scores (a min and a max key per page)."""
    cfg, kv = model.config, runner.kv
    elem = kv.k_caches[0].element_size()
    bs = runner.block_size
    layers = cfg.num_hidden_layers
    token_kv = 2 * cfg.num_key_value_heads * cfg.head_dim * elem
    tokens = context + 1
    weights = sum(p.numel() * p.element_size() for name, p in model.named_parameters()
                  if "embed_tokens" not in name)
    weights += batch * cfg.hidden_size * model.model.embed_tokens.weight.element_size()
    out = {"weights": weights, "kv": 0, "metadata": 0}
    if policy == "dense":
        out["kv"] = layers * batch * tokens * token_kv
    else:
        pages = -(-tokens // bs)
        kept = min(pages, max(1, budget // bs))
        out["kv"] = layers * batch * min(tokens, kept * bs) * token_kv
        out["metadata"] = layers * batch * pages * token_kv   # min + max key per page = one K+V row
    out["total"] = sum(out.values())
    return out


@contextlib.contextmanager
def _without_pdl(cuda: bool):
    """A kernel launched with programmatic dependent launch starts while its predecessor
    runs and waits for it inside, so its profiled time would include that wait: the
    breakdown is taken with PDL off (the timed steps keep it)."""
    ext = None
    if cuda:
        from ..kernels._backend import _cuda_ops, build
        ext = build() if _cuda_ops() is not None else None   # build() returns the loaded extension
    if ext is None:
        yield
        return
    was = ext.set_pdl(False)
    try:
        yield
    finally:
        ext.set_pdl(was)   # as the caller had it (an A/B run may have turned it off)


def profile_step(run_step, device: torch.device) -> dict:
    """ms per category of one step (`run_step()`, eager) under torch.profiler, and the
    GPU busy time (the sum of kernel times; on a CPU the sum of CPU op self times)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    run_step()   # warm: the first call may build or cache
    if cuda:
        torch.cuda.synchronize()
    with _without_pdl(cuda), profile(activities=acts) as prof:
        run_step()
        if cuda:
            torch.cuda.synchronize()
    ms = dict.fromkeys(CATEGORIES, 0.0)
    kernels = 0
    for evt in prof.events():
        if cuda:
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            t = evt.time_range.elapsed_us()
        else:
            if not evt.name.startswith("aten::"):
                continue
            t = evt.self_cpu_time_total
        ms[category(evt.name)] += t / 1000.0
        kernels += 1
    out = {k: round(v, 4) for k, v in ms.items()}
    out["gpu_busy"] = round(sum(ms.values()), 4)
    out["kernels"] = kernels
    out["source"] = "cuda kernels" if cuda else "cpu ops (reference kernels)"
    return out


def floor_table(res: dict, breakdown: bool) -> str:
    """The step of each row and policy beside its bytes and floor (and, with a
    breakdown, ms per category of the eager step and the host gap)."""
    lines = [f"\nfloor: bytes moved at the copy bandwidth measured in this run, "
             f"{res['copy_bandwidth_gbs']:.0f} GB/s (device-to-device copy, read + write)"]
    head = f"{'context':>8} {'batch':>6} {'policy':>7} {'step ms':>8} {'MB moved':>9} {'floor ms':>9} {'step/floor':>10}"
    if breakdown:
        head += "".join(f" {c[:9]:>9}" for c in CATEGORIES) + f" {'GPU busy':>9} {'host gap':>9}"
    lines.append(head)
    for r in res["rows"]:
        for policy in ("dense", "quest", "dense_fp8", "quest_fp8"):
            if policy not in r:   # the FP8 rows: absent from runs made without them
                continue
            p = r[policy]
            name = {"dense_fp8": "fp8", "quest_fp8": "q fp8"}.get(policy, policy)
            line = (f"{r['context']:>8} {r['batch']:>6} {name:>7} {r[policy + '_ms']:>8.3f} "
                    f"{p['bytes']['total'] / 1e6:>9.1f} {p['floor_ms']:>9.3f} {p['vs_floor']:>9.2f}x")
            if breakdown and "breakdown" in p:
                b = p["breakdown"]
                line += "".join(f" {b[c]:>9.3f}" for c in CATEGORIES) + f" {b['gpu_busy']:>9.3f} {b['host_gap']:>9.3f}"
            lines.append(line)
    return "\n".join(lines)
