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
GPU_OUT_DEFAULT=out/gpu source "$(dirname "$0")/gpu_lib.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/k17_gpu.txt"
gpu_build "$OUT/k17_build.log"
tail -n 1 "$OUT/k17_build.log"
t1=$SECONDS
timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider tests/kernels/test_fp8_cuda.py \
  tests/kernels/test_kernels_cuda.py -k "fp8 or decode or sparse" 2>&1 | tee "$OUT/k17_tests.log" | tail -n 12
echo "tests done at $((SECONDS - t1)) s after the build"
timeout 110 python3 -m tinyserve_core.cli bench kernels --only fp8 --no-peers --reps 20 --json "$OUT/bench_fp8.json" \
  > "$OUT/k17_bench.log" 2>&1
grep -v "it/s\]\|s/it\]" "$OUT/k17_bench.log" | tail -n 20
echo "total $((SECONDS - t0)) s ($((SECONDS - t1)) s after the build)"
