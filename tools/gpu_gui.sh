#!/usr/bin/env bash
# The serving GUI on the GPU machine, headless (issue 16's "GUI on a GPU"): unpacks the
# trimmed Qt that tools/qt_carry.sh built, runs the first-run workload (the GUI's own
# default config, statistics on) with the CUDA engine, saves a screenshot and the GUI
# benchmark. Device call: carry [".carry/qt.tar.xz"], command: bash tools/gpu_gui.sh [STEPS]
# Assumes the extension is built in the same call (tools/gpu_check.sh runs first) or
# builds it on first CUDA use.
set -uo pipefail
STEPS=${1:-300}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
tar xJf .carry/qt.tar.xz -C /tmp
export PYTHONPATH=/tmp/qt/site:$PWD LD_LIBRARY_PATH=/tmp/qt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
       FONTCONFIG_FILE=/tmp/qt/fonts/fonts.conf QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1
# the GUI's first-run config, on the GPU
python3 - "$OUT/gui_cuda.json" <<'PY'
import json, sys
from app.main_window import FIRST_RUN
json.dump({**FIRST_RUN, "device": "cuda", "dtype": "float16"}, open(sys.argv[1], "w"), indent=1)
PY
for size in 1600x1000 1280x800; do
  t0=$(date +%s.%N)
  timeout 240 python3 -m app.main --offscreen --config "$OUT/gui_cuda.json" --steps "$STEPS" \
    --size "$size" --screenshot "$OUT/gui_cuda_$size.png" 2>&1 | tail -n 3
  echo "gui $size: $STEPS steps in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s (start-up included)"
done
timeout 200 python3 -m tinyserve_core.cli bench gui --config "$OUT/gui_cuda.json" --frames 30 --blocks 4096,32768 --history-steps 0 \
  --json "$OUT/bench_gui_cuda.json" 2>&1 | tail -n 15
