#!/usr/bin/env bash
# Everything that needs a GPU, in one device call (build once, then test and benchmark):
#   device run, carry [".carry/fi", ".carry/wheels"], command: bash tools/gpu_check.sh [STEP ...]
# STEPs (default: all, in this order): tests tune kernels decode engine scene.
# Each step has a time limit so that one slow step cannot eat the whole 10-minute call.
# The FlashInfer peer installs from its sdist when .carry/fi holds it
# (`.venv/bin/pip download --no-deps --no-binary :all: flashinfer-python==0.2.14.post1 -d .carry/fi`).
# Results and logs go to $OUT (the device tool brings them back); a short table is printed last.
# The tune step's $OUT/tune.json holds this GPU's tuning row and the whole table with it
# ("table"): that is what tinyserve_core/csrc/tuning.json gets when the row is checked in.
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
export OUT
mkdir -p "$OUT"
steps=${*:-tests tune kernels decode engine scene}
has() { [[ " $steps " == *" $1 "* ]]; }
t0=$SECONDS
# Test needs the device image lacks (rapidfuzz: the scene's phrase matcher, imported by the scene
# GPU tests) install from wheels carried in .carry/wheels (`.venv/bin/pip download --no-deps
# --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 rapidfuzz -d .carry/wheels`).
if compgen -G ".carry/wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-deps .carry/wheels/*.whl
fi
if compgen -G ".carry/fi/*.tar.gz" >/dev/null; then
  FLASHINFER_ENABLE_AOT=0 python3 -m pip install -q --no-deps --no-build-isolation .carry/fi/*.tar.gz
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# A failed build must stop here: the ops would fall back to the torch reference and every
# figure below would measure the wrong thing.
if ! python3 -c "from tinyserve_core.kernels._backend import build; build()" > "$OUT/build.log" 2>&1; then
  grep -m 20 -i "error" "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
tail -n 1 "$OUT/build.log"
python3 -m tinyserve_core.cli info | tee -a "$OUT/gpu.txt"
echo "build done at $((SECONDS - t0)) s"
# Qt-free test folders only: the GPU machine has no PySide6 and no OMPL (a folder whose
# imports are missing there must not stop the others: --continue-on-collection-errors).
has tests && timeout 240 python3 -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
  tests/kernels tests/engine tests/model tests/selection tests/bench tests/eval tests/scene 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 15
has tune && timeout 150 python3 tools/gpu_tune.py > "$OUT/tune.log" 2>&1
has kernels && timeout 200 python3 -m tinyserve_core.cli bench kernels --json "$OUT/bench_kernels.json" \
  > "$OUT/bench_kernels.log" 2>&1
has decode && timeout 200 python3 -m tinyserve_core.cli bench decode --json "$OUT/bench_decode.json" \
  > "$OUT/bench_decode.log" 2>&1
has engine && timeout 150 python3 -m tinyserve_core.cli bench engine --device cuda --requests 64 --rate 64 \
  --json "$OUT/bench_engine.json" > "$OUT/bench_engine.log" 2>&1
# scene lab frames on the GPU (issue 19: 512x512 <= 5 ms)
has scene && timeout 120 python3 -m tinyserve_core.cli bench scene --device cuda --sizes 256,512 \
  --json "$OUT/bench_scene.json" > "$OUT/bench_scene.log" 2>&1
for f in tune bench_kernels bench_decode bench_engine bench_scene; do
  [ -f "$OUT/$f.log" ] && { echo "== $f"; tail -n 40 "$OUT/$f.log"; }
done
echo "total $((SECONDS - t0)) s"
# The device tool returns at most 8 files: the logs travel as one archive beside the JSON.
(cd "$OUT" && tar czf logs.tgz --remove-files gpu.txt ./*.log 2>/dev/null)
