#!/usr/bin/env bash
# Issue 20's target run on one GPU (build first): `bench decode` at 64 x 32K for the
# step-time column, then `eval selection`'s default run split by block size into three
# processes side by side (the run is host-bound: one process leaves the GPU mostly idle),
# joined with `--merge` into one report with plots (docs/selection/ takes them).
#   device run, command: bash tools/gpu_eval.sh [SECONDS_PER_PART]
set -uo pipefail
OUT=${OUT:-out/gpu}; export OUT; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
limit=${1:-330}
t0=$SECONDS
python3 -c "from tinyserve_core.kernels._backend import build; build()" > "$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log"; exit 1; }
echo "build $((SECONDS - t0)) s"
timeout 90 python3 -m tinyserve_core.cli bench decode --context 32768 --batch 64 --reps 10 \
  --json "$OUT/bench_decode_eval.json" > "$OUT/bench_decode_eval.log" 2>&1
tail -n 6 "$OUT/bench_decode_eval.log"
for bs in 8 16 32; do
  timeout "$limit" python3 -m tinyserve_core.cli eval selection --device cuda --block-sizes $bs \
    --json "$OUT/eval_b$bs.json" > "$OUT/eval_b$bs.log" 2>&1 &
done
wait
echo "eval parts done $((SECONDS - t0)) s"
python3 -m tinyserve_core.cli eval selection --merge "$OUT"/eval_b8.json "$OUT"/eval_b16.json "$OUT"/eval_b32.json \
  --decode-json "$OUT/bench_decode_eval.json" --json "$OUT/eval_selection.json" --md "$OUT/eval_selection.md" \
  --plots "$OUT/plots" > "$OUT/eval_merge.log" 2>&1
grep -E "^- |wrote|error" "$OUT/eval_merge.log" | cut -c1-220
(cd "$OUT" && tar czf plots.tgz --remove-files plots ./*.log 2>/dev/null)
echo "total $((SECONDS - t0)) s"
