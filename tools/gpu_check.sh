#!/usr/bin/env bash
# Everything that needs a GPU, in one device call (build once, then test and benchmark):
#   device run, carry [".carry/fi"], command: bash tools/gpu_check.sh
# The FlashInfer peer installs from its sdist when .carry/fi holds it
# (`.venv/bin/pip download --no-deps --no-binary :all: flashinfer-python==0.2.14.post1 -d .carry/fi`).
# Results and logs go to $OUT (the device tool brings them back); a short table is printed last.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if compgen -G ".carry/fi/*.tar.gz" >/dev/null; then
  FLASHINFER_ENABLE_AOT=0 python3 -m pip install -q --no-deps --no-build-isolation .carry/fi/*.tar.gz
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m tinyserve_core.cli info | tee -a "$OUT/gpu.txt"
# Qt-free test folders only: the GPU machine has no PySide6 and no OMPL.
python3 -m pytest -m cuda -q -p no:cacheprovider tests/kernels tests/engine tests/model tests/selection \
  2>&1 | tee "$OUT/cuda_tests.log" | tail -n 15
python3 -m tinyserve_core.cli bench kernels --json "$OUT/bench_kernels.json" > "$OUT/bench_kernels.log" 2>&1
python3 -m tinyserve_core.cli bench decode --json "$OUT/bench_decode.json" > "$OUT/bench_decode.log" 2>&1
python3 -m tinyserve_core.cli bench engine --device cuda --requests 64 --rate 64 \
  --json "$OUT/bench_engine.json" > "$OUT/bench_engine.log" 2>&1
for f in bench_kernels bench_decode bench_engine; do echo "== $f"; tail -n 16 "$OUT/$f.log"; done
