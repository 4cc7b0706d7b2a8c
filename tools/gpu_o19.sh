#!/usr/bin/env bash
# Issue 19 item 5 (helper o19): the apartment scene retrained on the GPU with more steps.
# On the 2-core CPU the shipped weights (voxel 0.03 m, 2,500 steps, 39 min under load) reach
# 28.0 dB held-out, below the 30 dB target: 81-88% of the error sits on label edges, which
# more steps and a finer grid sharpen. Two candidates, each trained, evaluated on the 8
# held-out views (the train-scene report) and written to $OUT; the table says which meets
# 30 dB and how large its weights are (the tracked tree must stay under 40 MB: the shipped
# apartment weights are 5.0 MB, everything else 32 MB). To ship one:
#   cp $OUT/apartment-<cfg>.weights.safetensors tinyserve_core/assets/scenes/apartment.weights.safetensors
#   device run, command: bash tools/gpu_o19.sh        (no kernel build needed; about 3 minutes)
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu_o19}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for cfg in "0.03 6000" "0.025 6000"; do
  set -- $cfg
  name="v$1-i$2"
  timeout 110 python3 -m tinyserve_core.cli train-scene --scene apartment --device cuda --threads 0 \
    --voxel "$1" --iters "$2" --out "$OUT/apartment-$name.weights.safetensors" --json "$OUT/apartment-$name.json" \
    > "$OUT/train-$name.log" 2>&1 || echo "$name: failed or timed out (see train-$name.log)"
  tail -n 2 "$OUT/train-$name.log"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'config':14} {'train s':>8} {'held-out dB':>12} {'mIoU':>6} {'MB':>6}  meets 30 dB / 0.9")
for f in sorted(os.listdir(out)):
    if f.endswith(".json") and f.startswith("apartment-"):
        s = json.load(open(os.path.join(out, f)))
        w = os.path.join(out, f[:-5] + ".weights.safetensors")
        mb = os.path.getsize(w) / 1e6 if os.path.exists(w) else float("nan")
        ok = s["heldout_psnr"] >= 30 and s["heldout_miou"] >= 0.9
        print(f"{f[10:-5]:14} {s['train_seconds']:8.1f} {s['heldout_psnr']:12.2f} {s['heldout_miou']:6.3f} {mb:6.2f}  {ok}")
PY
