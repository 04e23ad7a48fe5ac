#!/usr/bin/env bash
# Directly trained Spiking Diffusion Model on Fashion-MNIST (CPU-sized run; see BENCHMARKS.md):
# pre-spike stage, then the TSM stage from its weights, then an ANN of similar size for as many steps.
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-runs}
PRE=${PRE_STEPS:-2000}
TSM=${TSM_STEPS:-500}
sdm-train --data "$DATA" --out "$RUNS/sdm-prespike" --preset fmnist-small --T 4 --steps "$PRE" \
  --batch-size 32 --lr 1e-3 --warmup 200 --save-every 250 --sample-every 500 ${RESUME:+--resume}
sdm-train --data "$DATA" --out "$RUNS/sdm-tsm" --stage tsm --init-from "$RUNS/sdm-prespike" --steps "$TSM" \
  --batch-size 32 --lr 2e-4 --warmup 50 --save-every 250 --sample-every 250 ${RESUME:+--resume}
sdm-train-ann --data "$DATA" --out "$RUNS/ann-baseline" --preset fmnist-small --steps $((PRE + TSM)) \
  --batch-size 32 --lr 1e-3 --warmup 200 --save-every 250 --sample-every 500 ${RESUME:+--resume}
