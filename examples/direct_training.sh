#!/usr/bin/env bash
# The embedded Spiking Diffusion Model (embedded:fmnist-sdm) from scratch: the embedded ANN's preset
# (fmnist-small) at T = 4, the pre-spike stage, then the TSM stage from its weights; the control is the
# pre-spike run continued for as many steps as the TSM stage adds (equal totals: 7,000 steps at batch 64,
# as many as the embedded ANN had). Then the mechanisms' benchmark and the packaging.
# About 3.6 h for the pre-spike stage (1.8 to 2.3 s per step; 13,060 s measured) and 40 min per 1,000
# further steps on 2 CPU cores with bf16 autocast
# (PRECISION=fp32 on CPUs without bf16 units: 1.5x slower). RESUME=1 continues interrupted runs.
# The benchmark samples about 1.7 s per spiking image (DDIM-50, fp32, one process on 2 cores; 2.6 s each
# with two one-thread processes side by side): 2,000 images per model and 500 per guidance scale, so the
# full 13-scale sweep is about 5 h; its shards are resumable and shared (BENCHMARKS.md 3.2 ran
# --scales 0.95,0.98,1.0,1.01,1.02,1.03,1.04,1.05,1.08,1.1,1.2).
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-runs}
PRE=${PRE_STEPS:-6000}
EXTRA=${TSM_STEPS:-1000}
PRECISION=${PRECISION:-bf16}
COMMON=(--data "$DATA" --batch-size 64 --lr 5e-4 --save-every 250 --sample-every 1000 --precision "$PRECISION")

sdm-train "${COMMON[@]}" --out "$RUNS/fmnist-sdm-prespike" --preset fmnist-small --T 4 --steps "$PRE" \
  --warmup 500 ${RESUME:+--resume}
# TSM stage: a fresh optimiser (hence a short warm-up) on the pre-spike EMA weights, p initialised to 1.
sdm-train "${COMMON[@]}" --out "$RUNS/fmnist-sdm-tsm" --stage tsm --init-from "$RUNS/fmnist-sdm-prespike" \
  --steps "$EXTRA" --warmup 100 ${RESUME:+--resume}
# Control: the same pre-spike run, continued (its own optimiser state and EMA) to the same total.
[ -d "$RUNS/fmnist-sdm-control" ] || cp -r "$RUNS/fmnist-sdm-prespike" "$RUNS/fmnist-sdm-control"
sdm-train "${COMMON[@]}" --out "$RUNS/fmnist-sdm-control" --preset fmnist-small --T 4 --steps $((PRE + EXTRA)) \
  --warmup 500 --resume

python -m benchmarks.direct_training --control "$RUNS/fmnist-sdm-control" --tsm "$RUNS/fmnist-sdm-tsm" \
  --num-samples 2000 --sweep-samples 500
python examples/package_embedded_model.py --run "$RUNS/fmnist-sdm-tsm" \
  --quality benchmarks/results/direct_training/results.json
