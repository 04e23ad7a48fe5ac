#!/usr/bin/env bash
# Development DDPMs: not the embedded model, differing from it in what a conversion default can depend on
# (activation, width, data set). Conversion defaults are chosen on these and the embedded model together
# (benchmarks.code_defaults), never on the embedded model alone. Outputs stay out of git (runs/ is ignored).
#   relu-mnist       fmnist-cpu preset (16/32/32 channels, attention at 14 x 14), ReLU, MNIST
#   silu-fmnist-cpu  fmnist-cpu preset, SiLU, Fashion-MNIST (half the embedded model's width)
#   silu-mnist-deep  grey28-deep preset (24/48/48 channels, two ResNets per level, no attention), SiLU, MNIST
# 12-25 minutes each on 2 CPU cores at the default 2,000 steps; STEPS=N to change, RESUME=1 to continue.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
RUNS=${RUNS:-runs/dev}
STEPS=${STEPS:-2000}
BIN=${BIN:-.venv/bin}
FMNIST=$SHARED/fashion_mnist.npz; [ -f "$FMNIST" ] || FMNIST=fashion-mnist   # else torchvision's copy
MNIST=$SHARED/mnist_10k.npz; [ -f "$MNIST" ] || MNIST=mnist
COMMON=(--steps "$STEPS" --batch-size 64 --lr 1e-3 --warmup 200 --save-every 500 ${RESUME:+--resume})
"$BIN/sdm-train-ann" --data "$MNIST" --out "$RUNS/relu-mnist" --preset fmnist-cpu --act-fn relu --no-hflip "${COMMON[@]}"
"$BIN/sdm-train-ann" --data "$FMNIST" --out "$RUNS/silu-fmnist-cpu" --preset fmnist-cpu "${COMMON[@]}"
"$BIN/sdm-train-ann" --data "$MNIST" --out "$RUNS/silu-mnist-deep" --preset grey28-deep --no-hflip "${COMMON[@]}"
# Then: python -m benchmarks.code_defaults --model embedded:fmnist-ddpm \
#   --model "$RUNS/relu-mnist=$MNIST" --model "$RUNS/silu-fmnist-cpu" --num-samples 500
