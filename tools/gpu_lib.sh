# Sourced by the tools/gpu_*.sh scripts (one device call each): strict mode, the repository
# on the path, $OUT made, t0 set; `gpu_build LOG` builds the extension once and stops the
# script when the build fails (the ops would fall back to the torch reference and every
# figure after it would measure the wrong thing).
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-${GPU_OUT_DEFAULT:-out/gpu}}
export OUT
mkdir -p "$OUT"
t0=$SECONDS

gpu_build() {
  if ! python3 -c "from tinyserve_core.kernels._backend import build; build()" > "$1" 2>&1; then
    grep -m 20 -i "error" "$1"; echo "BUILD FAILED"; exit 1
  fi
}
