#!/usr/bin/env bash
# Helper k17 (issue 17 item 4: FP8 e4m3 KV cache with per-page scales), one device call:
#   device run, command: bash tools/gpu_k17.sh
# Builds the extension once, then (<= 3 minutes after the build):
#  1. the cuda tests of the area: the FP8 kernels against their torch reference, and the
#     fp16/bf16 decode tests (the decode kernel's tile pipeline and epilogue became helpers
#     that the FP8 kernel shares);
#  2. `tinyserve bench kernels --only fp8`: FP8 vs fp16 decode at 7 shapes (time, % of copy
#     bandwidth, errors vs the float32 reference) and the FP8 cache write.
# Logs and JSON go to $OUT; the tables are printed last.
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
export OUT
mkdir -p "$OUT"
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/k17_gpu.txt"
if ! python3 -c "from tinyserve_core.kernels._backend import build; build()" > "$OUT/k17_build.log" 2>&1; then
  grep -m 20 -i "error" "$OUT/k17_build.log"; echo "BUILD FAILED"; exit 1
fi
tail -n 1 "$OUT/k17_build.log"
t1=$SECONDS
timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider tests/kernels/test_fp8_cuda.py \
  tests/kernels/test_kernels_cuda.py -k "fp8 or decode or sparse" 2>&1 | tee "$OUT/k17_tests.log" | tail -n 12
echo "tests done at $((SECONDS - t1)) s after the build"
timeout 110 python3 -m tinyserve_core.cli bench kernels --only fp8 --no-peers --reps 20 --json "$OUT/bench_fp8.json" \
  > "$OUT/k17_bench.log" 2>&1
grep -v "it/s\]\|s/it\]" "$OUT/k17_bench.log" | tail -n 20
echo "total $((SECONDS - t0)) s ($((SECONDS - t1)) s after the build)"
