"""Per-device tuning sweep (GPU only; run by tools/gpu_check.sh): produces this GPU's row of
tinyserve_core/csrc/tuning.json.

For each plan parameter set on a small grid, the extension itself says which split count
(paged decode, the 12 shapes of `bench kernels`, with and without the L2::256B hint on the
K/V copies, split partials merged in the decode launch or by a second kernel) and which
CTA size of page_scores' FMA kernel (32K context, batch 1 / 8 / 64) it would pick;
every distinct choice is timed once on the same
data (median of 30), and the parameter set with the lowest summed time relative to the
best choice of each shape wins (ties: the earlier set, the shipped constants first). Then
the one-launch sparse decode against the three launches at batches 1, 2, 4, ...: the row's
sparse_fused_max_batch is the largest batch of that series where one launch wins. Writes $OUT/tune.json
(every timing, the row, and the whole table with this GPU's row replaced, ready to be
checked in) and prints one table."""

from __future__ import annotations

import datetime
import itertools
import os
import sys

import torch

from tinyserve_core.bench import kernels as kb
from tinyserve_core.kernels import _cuda_ops as ops, tuning
from tinyserve_core.kernels._backend import build
from tinyserve_core.loaders import MiB, load_json
from tinyserve_core.writers import write_json

REPS = 30
SPLIT_GRID = {"split_min_tiles": (8, 2, 4, 16, 32), "split_cost": (0.002, 0.0, 0.01, 0.05),
              "decode_l2_prefetch": (0, 1), "decode_merge_max_splits": (4, 0, 8, 4096)}
SPARSE_BATCHES = (1, 2, 4, 8, 16, 32)
SPARSE_PAGES = 2048 // 16  # the bench's 2,048-token budget at block 16
SCORE_GRID = {"score_max_ppc": (128, 64, 256, 512), "score_min_ctas_per_sm": (8.0, 0.5, 1.0, 1.5, 2.0, 4.0)}


def _grid(grid: dict) -> list[dict]:
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]


def _best(grid: list[dict], choice, timed, shapes, base: dict, ext) -> tuple[dict, float]:
    """The grid point whose choices (choice(shape, point) under it) sum to the least relative time."""
    best, best_cost = None, float("inf")
    for point in grid:
        ext.set_tuning(*tuning.args_of({**base, **point}))
        cost = 0.0
        for shape in shapes:
            t = timed(shape, choice(shape, point))
            cost += t / min(timed.known(shape))
        if cost < best_cost - 1e-9:
            best, best_cost = point, cost
    return best, best_cost / len(shapes)


class Timed:
    """Times (shape, choice) once, lazily; remembers every figure."""

    def __init__(self, measure):
        self.measure, self.us = measure, {}

    def __call__(self, shape, choice):
        if (shape, choice) not in self.us:
            self.us[(shape, choice)] = self.measure(shape, choice)
        return self.us[(shape, choice)]

    def known(self, shape):
        return [v for (s, _), v in self.us.items() if s == shape]


def main() -> int:
    out_dir = os.environ.get("OUT", "out/gpu")
    ext = build()
    props = torch.cuda.get_device_properties(0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    l2 = props.L2_cache_size
    bw = kb.copy_bandwidth(REPS)
    rows = tuning.load_table()
    base = dict(tuning.row_for(rows, "default", 0))

    cases: dict = {}

    def case(shape):
        if shape not in cases:
            cases.clear()
            torch.cuda.empty_cache()
            cases[shape] = kb.DecodeCase(shape[0], shape[1], l2, gen)
        return cases[shape]

    def decode_us(shape, pick):
        splits, _, _ = pick  # the hint and the merge are the tuning in force (set with the grid point)
        c = case(shape)
        run = lambda i: ext.paged_decode_attention(c.q[i % c.rot], c.k, c.v, c.tables[i % c.rot],  # noqa: E731
                                                   c.seq_lens, c.scale, None, splits)
        return kb.time_ms(run, REPS) * 1e3

    shapes = [(b, n) for b in kb.BATCHES for n in kb.CONTEXTS]
    dec = Timed(decode_us)
    def split_choice(s, pt):  # (splits, hint, 1: merged in the decode launch)
        splits = ext.decode_num_splits(s[0], kb.HKV, -(-s[1] // kb.BS) * kb.BS, kb.HD)
        return splits, pt["decode_l2_prefetch"], int(1 < splits <= pt["decode_merge_max_splits"])

    # shapes outer, grid inner: each shape's pool is built once
    for shape in shapes:
        for point in _grid(SPLIT_GRID):
            ext.set_tuning(*tuning.args_of({**base, **point}))
            dec(shape, split_choice(shape, point))
    split_best, split_rel = _best(_grid(SPLIT_GRID), split_choice, dec, shapes, base, ext)
    cases.clear()

    metas: dict = {}

    def score_us(batch, ppc):
        if batch not in metas:
            metas.clear()
            torch.cuda.empty_cache()
            c = kb.DecodeCase(batch, 32768, l2, gen)
            meta = torch.empty(c.k.shape[0], 2, kb.HKV, kb.HD, device="cuda", dtype=torch.float16)
            meta[:, 0], meta[:, 1] = c.k.amin(1), c.k.amax(1)
            metas[batch] = (c, meta)
        c, meta = metas[batch]
        run = lambda i: ext.page_scores(c.q[i % c.rot], meta, c.tables[i % c.rot], c.seq_lens,  # noqa: E731
                                        c.scale, kb.BS, ppc)
        return kb.time_ms(run, REPS) * 1e3

    sc = Timed(score_us)
    pages = 32768 // kb.BS
    ppc_choice = lambda b, pt=None: ext.page_scores_ppc(b, kb.HKV, pages)  # noqa: E731
    # The CTA-size plan is the FMA kernel's (float32, a misaligned query, groups over 8): the
    # tensor-core kernel that fp16/bf16 take runs one 16-page tile a warp whatever the plan says.
    was_mma = ext.set_score_mma(False)
    try:
        for batch in kb.BATCHES:
            for point in _grid(SCORE_GRID):
                ext.set_tuning(*tuning.args_of({**base, **point}))
                sc(batch, ppc_choice(batch))
        score_best, score_rel = _best(_grid(SCORE_GRID), ppc_choice, sc, list(kb.BATCHES), base, ext)
    finally:
        ext.set_score_mma(was_mma)
    metas.clear()

    # the one-launch sparse path up to the largest batch (of a doubling series from 1)
    # where it beats the three launches, with the split and scoring plans just chosen
    ext.set_tuning(*tuning.args_of({**base, **split_best, **score_best}))
    sparse, fused_max = [], 0
    for batch in SPARSE_BATCHES:
        if not ext.sparse_decode_splits(batch, kb.HKV, pages, SPARSE_PAGES, kb.BS, kb.HD):
            break
        c = kb.DecodeCase(batch, 32768, l2, gen)
        meta = torch.empty(c.k.shape[0], 2, kb.HKV, kb.HD, device="cuda", dtype=torch.float16)
        meta[:, 0], meta[:, 1] = c.k.amin(1), c.k.amax(1)
        us = {fused: kb.time_ms(lambda i: ops.sparse_decode_attention(  # noqa: B023
            c.q[i % c.rot], c.k, c.v, meta, c.tables[i % c.rot], c.seq_lens, c.scale, SPARSE_PAGES, fused=fused),
            REPS) * 1e3 for fused in (True, False)}
        sparse.append({"batch": batch, "one_launch_us": us[True], "three_launches_us": us[False]})
        del c, meta
        torch.cuda.empty_cache()
        if us[True] >= us[False]:
            break
        fused_max = batch

    # the device keys last: `base` is the default row and carries name 'default'
    row = {**base, **split_best, **score_best, "sparse_fused_max_batch": fused_max, "name": props.name, "sms": props.multi_processor_count,
           "source": f"tools/gpu_tune.py on an {props.name}, {datetime.date.today()}, torch {torch.__version__}, "
                     f"copy floor {bw:.0f} GB/s"}
    ext.set_tuning(*tuning.args_of(row))
    table = {"about": load_json(tuning.TABLE_PATH, max_bytes=MiB)["about"],
             "devices": [r for r in rows if (r["name"], r.get("sms")) != (row["name"], row["sms"])] + [row]}
    result = {"gpu": props.name, "sms": props.multi_processor_count, "copy_gbps": bw,
              "decode_us": [{"batch": s[0], "ctx": s[1], "splits": k[0], "l2_prefetch": k[1], "fused_merge": k[2],
                             "us": v}
                            for (s, k), v in dec.us.items()],
              "page_scores_us": [{"batch": b, "ctx": 32768, "pages_per_cta": k, "us": v}
                                 for (b, k), v in sc.us.items()],
              "sparse_us": sparse, "split_rel_to_best": split_rel, "score_rel_to_best": score_rel, "row": row, "table": table}
    write_json(os.path.join(out_dir, "tune.json"), result, "tune output", indent=1, make_parents=True)
    print(f"copy floor {bw:.0f} GB/s on {props.name} ({props.multi_processor_count} SMs)")
    for s in shapes:
        got = {k: v for (sh, k), v in dec.us.items() if sh == s}
        pick = split_choice(s, row)
        print(f"decode {s[0]:>3}x{s[1]:>5} " + "  ".join(
            f"s={k[0]}{'/L2' if k[1] else ''}{'/M' if k[2] else ''}{'*' if k == pick else ''} {v:.1f}"
            for k, v in sorted(got.items())) + " us")
    for b in kb.BATCHES:
        got = {k: v for (bb, k), v in sc.us.items() if bb == b}
        print(f"scores {b:>3}x32K " + "  ".join(f"ppc={k}{'*' if k == ppc_choice(b) else ''} {v:.1f}"
                                              for k, v in sorted(got.items())) + " us")
    for r in sparse:
        print(f"sparse {r['batch']:>3}x32K one launch {r['one_launch_us']:.1f} us, three {r['three_launches_us']:.1f} us")
    print(f"split plan {split_rel:.3f}x of the best per shape, scoring plan {score_rel:.3f}x")
    print(tuning.describe(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
