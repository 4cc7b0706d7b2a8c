"""`tinyserve soak`: randomized engine episodes for minutes, with the block manager's
invariants checked after every step (the loop is tinyserve_core.bench.soak)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("soak", help="run random engine episodes for minutes, checking invariants every step",
                       description="Random policies, block sizes, small pools (preemption), n up to 4 "
                                   "(copy-on-write), never-fitting requests and live updates between steps "
                                   "on a tiny random model; the block manager's invariants after every step, "
                                   "no request lost and no block leaked at the end of each episode. "
                                   "Exit 1 if any check failed.")
    p.add_argument("--minutes", type=float, default=1.0, help="how long to run (the last episode is drained)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    import torch
    from tqdm import tqdm

    from ..bench.soak import run_soak
    from ..errors import ConfigError

    if not math.isfinite(args.minutes) or not 0 < args.minutes <= 24 * 60:
        raise ConfigError("--minutes", f"must be in (0, 1440], got {args.minutes}")
    # many tiny ops: a second OpenMP thread on shared cores made steps 10x slower
    torch.set_num_threads(1)
    bar = tqdm(total=1000, desc="soak", unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def progress(fraction: float) -> None:
        bar.update(int(fraction * 1000) - bar.n)

    report = run_soak(args.minutes * 60, seed=args.seed, progress=progress)
    bar.close()
    for line in report.lines():
        print(line)
    for f in report.failures[1:10]:
        print(f"  also: {f}", file=sys.stderr)
    return 0 if report.ok else 1
