"""Block-manager operation costs (`tinyserve bench kv`) at a large pool, the GUI snapshot
against rebuilding it from the block objects, and memory waste / prefix hits on
vLLM-like workloads against static max-length reservation.

Every figure is measured in this process on this machine; the JSON records which."""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from ..kv.block_manager import BlockManager
from ..kv.memory_sim import run_memory_workload
from .machine import cpu_model


def _per_call_us(fn, calls: int, repeats: int = 1) -> float:
    """Best of `repeats` (only for read-only fns): the machine may be shared."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / calls * 1e6


def time_ops(num_blocks: int, block_size: int, seqs: int, prompt_len: int, seed: int,
             progress=None) -> dict[str, float]:
    """Microseconds per call, with `seqs` live sequences in a `num_blocks` pool."""
    rng = np.random.default_rng(seed)
    need = seqs * (-(-(prompt_len + 64) // block_size)) * 2
    if need > num_blocks:
        raise ConfigError("num_blocks", f"needs >= {need} for {seqs} seqs of {prompt_len} tokens")
    t = time.perf_counter()
    bm = BlockManager(num_blocks, block_size)
    out = {"construct_ms": (time.perf_counter() - t) * 1e3}
    prompts = [rng.integers(0, 32000, prompt_len).tolist() for _ in range(seqs)]
    ids = range(seqs)

    def step(name, fn, calls, repeats=1):
        out[name] = _per_call_us(fn, calls, repeats)
        if progress is not None:
            progress.update(1)

    step("allocate_us", lambda: [bm.allocate(i, prompts[i]) for i in ids], seqs)
    step("cache_full_blocks_us",
         lambda: [bm.cache_full_blocks(i, prompts[i], prompt_len) for i in ids], seqs)
    # same prompts again: every full block but the last-token one is a hit
    step("allocate_prefix_hit_us",
         lambda: [bm.allocate(seqs + i, prompts[i]) for i in ids], seqs)
    step("free_us", lambda: [bm.free(seqs + i) for i in ids], seqs)
    step("fork_us", lambda: [bm.fork(i, seqs + i) for i in ids], seqs)
    step("append_slot_cow_us", lambda: [bm.append_slot(seqs + i, prompt_len + 1) for i in ids], seqs)
    n_steps = 32

    def decode():
        for k in range(n_steps):
            for i in ids:
                bm.append_slot(i, prompt_len + 1 + k)
    step("append_slot_us", decode, n_steps * seqs)
    step("stats_us", lambda: [bm.stats() for _ in range(1000)], 1000, repeats=5)

    def snapshots():  # one alive at a time, as the GUI holds them
        for _ in range(20):
            bm.blocks_snapshot()
    step("blocks_snapshot_us", snapshots, 20, repeats=5)
    blocks = bm.pool.blocks

    def rebuild():  # the peer: building the GUI arrays from the Python block objects
        np.array([b.ref_cnt for b in blocks], np.int32)
        np.array([b.block_hash is not None for b in blocks], np.bool_)
        np.array([b.ref_cnt == 0 and b.block_hash is not None for b in blocks], np.bool_)
    step("snapshot_rebuild_from_objects_us", rebuild, 1, repeats=5)
    bm.check_invariants()
    return out


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


# The waste workloads: vLLM-like request streams, with and without shared prefixes.
WASTE_WORKLOADS = {
    "sharegpt-like": dict(),
    "sharegpt-like, 4 shared 256-token system prompts": dict(shared_prefix_len=256),
    "sharegpt-like, block 128": dict(block_size=128),
}
OPS_PER_POOL = 10  # `time_ops` times ten operations: the progress bar's total per pool


def measure_kv(num_blocks: int = 131072, block_size: int = 16, seqs: int = 2000, prompt_len: int = 300,
               requests: int = 400, seed: int = 0, progress=None) -> dict:
    """Op timings at `num_blocks` and at 4x that (per-op cost must not grow with the
    pool), and memory waste per workload. `progress(total, desc, unit)` returns a
    context-managed bar with `update(n)` (tqdm's signature)."""
    for name, v in (("seqs", seqs), ("prompt_len", prompt_len), ("requests", requests)):
        if v < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be >= 1")
    BlockManager(1, block_size)  # validates block_size with the field name
    bar = progress or (lambda total, desc, unit: _NoBar())
    sizes = (num_blocks, 4 * num_blocks)
    with bar(OPS_PER_POOL * len(sizes), "op timings", "op") as b:
        ops, ops_big = (time_ops(n, block_size, seqs, prompt_len, seed, b) for n in sizes)
    waste = {}
    for name, kw in WASTE_WORKLOADS.items():
        kw = {"block_size": block_size, **kw}
        with bar(requests, name, "req") as b:
            r = run_memory_workload(num_requests=requests, seed=seed, progress=b, **kw)
        waste[name] = {"block_size": kw["block_size"], "steps": r.steps,
                       "mean_waste": r.mean_waste, "reserved_waste": r.mean_reserved_waste,
                       "peak_usage": r.peak_usage, "prefix_hit_rate": r.prefix_hit_rate,
                       "preemptions": r.preemptions}
    return {"machine": cpu_model(), "num_blocks": num_blocks, "block_size": block_size, "seqs": seqs,
            "prompt_len": prompt_len, "ops": ops, "ops_4x_pool": ops_big,
            "snapshot_speedup_vs_rebuild": ops["snapshot_rebuild_from_objects_us"] / ops["blocks_snapshot_us"],
            "waste": waste}
