#!/usr/bin/env bash
# Directly trained Spiking Diffusion Model on Fashion-MNIST: pre-spike stage, then the TSM stage from its
# weights, then an ANN of similar size for as many steps. Defaults are the CPU-sized run of BENCHMARKS.md
# (about 15 minutes on 2 cores); on a GPU use PRESET=fmnist-small ANN_PRESET=fmnist-small and more steps.
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-runs}
PRESET=${PRESET:-fmnist-cpu}
ANN_PRESET=${ANN_PRESET:-fmnist-cpu}
PRE=${PRE_STEPS:-1000}
TSM=${TSM_STEPS:-250}
sdm-train --data "$DATA" --out "$RUNS/sdm-prespike" --preset "$PRESET" --T 4 --steps "$PRE" \
  --batch-size 32 --lr 1e-3 --warmup 200 --save-every 250 --sample-every 500 ${RESUME:+--resume}
sdm-train --data "$DATA" --out "$RUNS/sdm-tsm" --stage tsm --init-from "$RUNS/sdm-prespike" --steps "$TSM" \
  --batch-size 32 --lr 2e-4 --warmup 50 --save-every 200 --sample-every 200 ${RESUME:+--resume}
sdm-train-ann --data "$DATA" --out "$RUNS/ann-baseline" --preset "$ANN_PRESET" --steps $((PRE + TSM)) \
  --batch-size 32 --lr 1e-3 --warmup 200 --save-every 250 --sample-every 500 ${RESUME:+--resume}
