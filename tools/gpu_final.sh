#!/usr/bin/env bash
# One device call after a merge (build once): the serving GUI on the GPU (window and the
# Kernels view), then `bench engine` (issue 16's rows) and a one-shape `bench decode`
# with twostage beside quest (issue 20's step-time target). Carry [".carry/qt.tar.xz"].
set -uo pipefail
OUT=${OUT:-out/gpu}; export OUT; mkdir -p "$OUT"
tar xJf .carry/qt.tar.xz -C /tmp
export PYTHONPATH=/tmp/qt/site:$PWD LD_LIBRARY_PATH=/tmp/qt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
       FONTCONFIG_FILE=/tmp/qt/fonts/fonts.conf QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1
t0=$SECONDS
python3 -c "from tinyserve_core.kernels._backend import build; build()" > "$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
echo "build $((SECONDS - t0)) s"
python3 - "$OUT/gui_cuda.json" <<'PY'
import json, sys
from app.main_window import FIRST_RUN
json.dump({**FIRST_RUN, "device": "cuda", "dtype": "float16"}, open(sys.argv[1], "w"), indent=1)
PY
timeout 60 python3 -m app.main --offscreen --config "$OUT/gui_cuda.json" --steps 300 --size 1920x1080 \
  --screenshot "$OUT/gui_cuda_1920x1080.png" --summary-json "$OUT/gui_summary.json" 2>&1 | tail -n 2
timeout 60 python3 -m app.main --offscreen --config "$OUT/gui_cuda.json" --steps 300 --size 1920x1080 \
  --view Kernels --screenshot "$OUT/gui_cuda_kernels.png" 2>&1 | tail -n 2
echo "gui done $((SECONDS - t0)) s"
timeout 120 python3 -m tinyserve_core.cli bench engine --device cuda --requests 64 --rate 64 \
  --json "$OUT/bench_engine.json" > "$OUT/bench_engine.log" 2>&1; tail -n 30 "$OUT/bench_engine.log"
echo "engine done $((SECONDS - t0)) s"
timeout 50 python3 -m tinyserve_core.cli bench decode --context 32768 --batch 64 --budget 4096 --reps 10 \
  --json "$OUT/bench_decode.json" > "$OUT/bench_decode.log" 2>&1; tail -n 20 "$OUT/bench_decode.log"
echo "total $((SECONDS - t0)) s"
