#!/usr/bin/env bash
# Every command once on DEVICE (default cuda) at tiny size, a few minutes in all: the device paths that
# the CPU suite cannot see (tensors left on the CPU beside a model on the GPU). `gpu_smoke.sh cpu` runs
# the same path on a CPU. Writes under OUT (default out/gpu_smoke); stops at the first failure.
#   examples/gpu_smoke.sh [DEVICE]
set -euo pipefail
DEVICE=${1:-cuda}
OUT=${OUT:-out/gpu_smoke}/$DEVICE
BIN=${BIN:-.venv/bin}
PY=${PY:-$BIN/python}
rm -rf "$OUT" && mkdir -p "$OUT"
# Tiny images of random strokes: the commands' data paths, with no download.
"$PY" - "$OUT/data.npz" <<'EOF'
import sys
import numpy as np
rng = np.random.default_rng(0)
x = np.zeros((256, 16, 16), np.uint8)
for image in x:
    row, col = rng.integers(2, 14, 2)
    image[row - 2 : row + 2, :] = 255 if rng.random() < 0.5 else 0
    image[:, col - 2 : col + 2] = 200
np.savez(sys.argv[1], x_train=x, y_train=np.zeros(256, np.int64), x_test=x[:64], y_test=np.zeros(64, np.int64))
EOF
step() { echo "== $*"; "$@"; }
TRAIN=(--data "$OUT/data.npz" --preset tiny --steps 4 --batch-size 8 --save-every 4 --warmup 1 --device "$DEVICE")
step "$BIN/sdm-train-ann" "${TRAIN[@]}" --out "$OUT/ann"
step "$BIN/sdm-train" "${TRAIN[@]}" --T 2 --out "$OUT/sdm"
step "$BIN/sdm-sample" --ckpt "$OUT/ann" --num-samples 4 --steps 3 --out "$OUT/sample" --device "$DEVICE"
step "$BIN/sdm-eval" --ckpt "$OUT/sdm" --num-samples 8 --steps 3 --metrics fid --extractor fmnist \
  --reference "$OUT/data.npz" --work-dir "$OUT/eval_work" --out "$OUT/eval.json" --device "$DEVICE"
FAST=(--T 2 --calib-samples 32 --probes 4 --steps 3 --batch-size 8)
step "$BIN/sdm-convert" --ckpt "$OUT/ann" "${FAST[@]}" --num-samples 4 --energy-budget 0.9 --finetune-steps 2 \
  --pairs 16 --finetune-batch-size 4 --out "$OUT/convert" --device "$DEVICE"
step "$BIN/sdm-finetune" --snn "$OUT/convert/snn" --steps 2 --pairs 16 --batch-size 4 --source student \
  --num-samples 2 --sample-steps 3 --out "$OUT/finetune" --device "$DEVICE"
step "$BIN/sdm-sweep" --ckpt "$OUT/ann" --T 2,4 --calib mse --calib-samples 32 --probes 4 --fid 8 --extractor fmnist \
  --reference "$OUT/data.npz" --steps 3 --out "$OUT/sweep" --device "$DEVICE"
step "$BIN/sdm-compare" --ann "$OUT/ann" --convert-T 2 --converted "$OUT/finetune/snn" --direct "$OUT/sdm" \
  --num-samples 8 --steps 3 --metrics fid --extractor fmnist --reference "$OUT/data.npz" --calib-samples 32 \
  --out "$OUT/compare" --device "$DEVICE"
echo "gpu_smoke: every command ran on $DEVICE -> $OUT"
