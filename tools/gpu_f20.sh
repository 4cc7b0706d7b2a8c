#!/usr/bin/env bash
# Issue 20 item 3 on the GPU: twostage's fused stage 2 and its graph-captured decode step.
#   device run, command: bash tools/gpu_f20.sh [STEP ...]     (STEPs: tests decode; default both)
# Builds the extension (or loads the cached build), runs the cuda tests of the twostage area,
# then `bench decode` at 32K context, batch 1 and 64: twostage (int8 keys, 4x candidates, the
# policy's defaults) and a cheaper form (int4 keys, 2x candidates, batch 64), each beside quest
# at the same page count, all replayed from CUDA graphs, eager columns beside. Logs and JSON go
# to $OUT; a short table is printed last. About 3 minutes after the build.
GPU_OUT_DEFAULT=out/gpu_f20 source "$(dirname "$0")/gpu_lib.sh"
steps=${*:-tests decode}
has() { [[ " $steps " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
gpu_build "$OUT/build.log"
tail -n 1 "$OUT/build.log"
echo "build done at $((SECONDS - t0)) s"
t1=$SECONDS   # the 3-minute budget starts after the build
left() { echo $((180 - (SECONDS - t1))); }
if has tests; then
  timeout 60 python3 -m pytest -m cuda -q -p no:cacheprovider \
    tests/selection/test_twostage_fused_cuda.py tests/selection/test_twostage_cuda.py \
    tests/engine/test_cuda_graphs.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 15
fi
if has decode; then
  timeout $(( $(left) - 10 )) python3 -m tinyserve_core.cli bench decode --context 32768 --batch 1 64 --reps 10 \
    --json "$OUT/decode_int8_c4.json" > "$OUT/decode_int8_c4.log" 2>&1
  if [ "$(left)" -gt 40 ]; then   # the cheaper form, when the budget still allows it
    timeout $(( $(left) - 5 )) python3 -m tinyserve_core.cli bench decode --context 32768 --batch 64 --reps 10 \
      --quant-bits 4 --candidates 2 --json "$OUT/decode_int4_c2.json" > "$OUT/decode_int4_c2.log" 2>&1
  fi
  python3 - <<'PY'
import json, os, pathlib
print(f"{'twostage form':<14} {'ctx':>6} {'batch':>5} {'quest ms':>9} {'twostage ms':>12} {'ratio':>6} "
      f"{'quest eager':>12} {'two eager':>10}")
for name in ("decode_int8_c4", "decode_int4_c2"):
    path = pathlib.Path(os.environ["OUT"]) / f"{name}.json"
    if not path.exists():
        print(f"{name}: no result (see {name}.log)")
        continue
    res = json.loads(path.read_text())
    t = res["twostage"]
    form = f"int{t['quant_bits']} {t['candidates']:g}x"
    for r in res["rows"]:
        print(f"{form:<14} {r['context']:>6} {r['batch']:>5} {r['quest_ms']:>9.2f} {r['twostage_ms']:>12.2f} "
              f"{r['twostage_vs_quest']:>5.2f}x {r['quest_eager_ms']:>12.2f} {r['twostage_eager_ms']:>10.2f}")
print("target (issue 20): twostage <= 1.2x quest at 64 x 32K, same page count")
PY
fi
echo "total $((SECONDS - t0)) s"
(cd "$OUT" && tar czf logs.tgz --remove-files gpu.txt ./*.log 2>/dev/null)
