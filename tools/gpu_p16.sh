#!/usr/bin/env bash
# Issue 16 item 5 (a decode step near its floor), on the GPU machine after the build:
#   bash tools/gpu_p16.sh            (results in $OUT, default out/gpu_p16)
# 1. the cuda tests of the fused ops, the fused model and the runner/graph path;
# 2. `bench decode --context 8192 32768 --batch 1 64 --breakdown`: each step beside its
#    floor (bytes at the copy bandwidth measured in the same run) and where it goes;
# 3. the batch-1 8K row again with TINYSERVE_SKINNY_GEMM=0 (cuBLAS for every product).
# About 2-3 minutes once the extension is built (the serving-shape prefills of 64 x 32K
# tokens dominate).
GPU_OUT_DEFAULT=out/gpu_p16 source "$(dirname "$0")/gpu_lib.sh"
gpu_build "$OUT/build.log"
echo "build done at $((SECONDS - t0)) s"
timeout 150 python3 -m pytest -m cuda -q -p no:cacheprovider \
  tests/kernels/test_fused_cuda.py tests/kernels/test_kernels_cuda.py tests/engine/test_cuda_graphs.py \
  tests/engine/test_model_runner.py tests/engine/test_step_inputs.py tests/engine/test_engine_cuda.py tests/model 2>&1 \
  | tee "$OUT/cuda_tests.log" | tail -n 8
echo "tests done at $((SECONDS - t0)) s"
timeout 200 python3 -m tinyserve_core.cli bench decode --context 8192 32768 --batch 1 64 --breakdown \
  --reps 20 --json "$OUT/bench_decode_p16.json" > "$OUT/bench_decode_p16.log" 2>&1
tail -n 14 "$OUT/bench_decode_p16.log"
# the batch-1 row with every product on cuBLAS: what the skinny GEMM kernel buys
TINYSERVE_SKINNY_GEMM=0 timeout 60 python3 -m tinyserve_core.cli bench decode --context 8192 --batch 1 \
  --reps 20 --json "$OUT/bench_decode_p16_cublas.json" > "$OUT/bench_decode_p16_cublas.log" 2>&1
echo "== batch 1 with TINYSERVE_SKINNY_GEMM=0 (cuBLAS for every product)"
tail -n 3 "$OUT/bench_decode_p16_cublas.log"
echo "total $((SECONDS - t0)) s"
