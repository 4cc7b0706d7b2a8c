#!/usr/bin/env bash
# Issue 16 items 2-4 on the GPU (helper c16): statistics as columnar records, the host side
# of a step, profiling with CUDA graphs. One device call, no carry; about 3 minutes after
# the build:
#   device run, command: bash tools/gpu_c16.sh
# 1. `pytest -m cuda` of the engine, selection, observe and bench tests;
# 2. the issue's simulate workload (shipped model, fp16, 64 requests at 50 req/s, n = 2,
#    half the prompts sharing a prefix) as quest, quest + statistics and quest +
#    statistics + profiling: total tok/s, TPOT, host ms per step, device busy;
# 3. `bench engine --no-peer` (our rows only): the same three configurations on the static
#    mixed batch of 64 (throughput-bound) and on the Poisson stream, and 256 requests at
#    1000/s (the large-batch host figure), each with host ms/step and its time against quest.
# Targets: statistics <= 1.15x quest, profiling <= 1.05x statistics, host <= 1 ms per step.
# Results go to $OUT (JSON + logs.tgz); a short table is printed last.
GPU_OUT_DEFAULT=out/gpu source "$(dirname "$0")/gpu_lib.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
gpu_build "$OUT/build.log"
echo "build done at $((SECONDS - t0)) s"
timeout 70 python3 -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
  tests/engine tests/selection tests/observe tests/bench 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 6
echo "tests done at $((SECONDS - t0)) s"
sim() {   # name, extra flags
  timeout 30 python3 -m tinyserve_core.cli simulate --device cuda --policy quest --requests 64 --rate 50 \
    --n 2 --shared-prefix-frac 0.5 --seed 0 "${@:2}" --summary-json "$OUT/sim_$1.json" > "$OUT/sim_$1.log" 2>&1 \
    || { echo "simulate $1 failed:"; tail -n 5 "$OUT/sim_$1.log"; }
}
sim quest
sim stats --stats
sim profile --stats --profile
echo "simulate done at $((SECONDS - t0)) s"
timeout 75 python3 -m tinyserve_core.cli bench engine --device cuda --requests 64 --rate 64 --no-peer \
  --overload-requests 256 --overload-rate 1000 --json "$OUT/bench_engine_c16.json" > "$OUT/bench_engine.log" 2>&1
tail -n 9 "$OUT/bench_engine.log"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name in ("quest", "stats", "profile"):
    p = os.path.join(out, f"sim_{name}.json")
    if os.path.exists(p):
        rows.append((name, json.load(open(p))))
if rows:
    print("\nsimulate (64 req at 50/s, n=2, shared prefix), quest / + stats / + stats + profile:")
    print(f"{'run':<9} {'total tok/s':>11} {'TPOT p50 ms':>11} {'host ms/step':>12} {'busy %':>7} {'vs previous':>11}")
    prev = None
    for name, s in rows:
        tps = s.get("total_tokens_per_s") or 0.0
        busy = s.get("device_busy_frac")
        vs = f"{prev / tps:.2f}x" if prev and tps else ""
        print(f"{name:<9} {tps:>11.0f} {s.get('tpot_p50_ms') or float('nan'):>11.2f} "
              f"{s.get('host_ms_per_step') or float('nan'):>12.3f} {100 * busy if busy else float('nan'):>7.1f} {vs:>11}")
        prev = tps
PY
echo "total $((SECONDS - t0)) s"
(cd "$OUT" && tar czf logs.tgz --remove-files gpu.txt ./*.log 2>/dev/null)
