#!/usr/bin/env bash
# The development-set study of issue 30, one job at a time on the 2 cores (resumable: rerun to continue).
set -euo pipefail
MNIST=../shared/data/mnist_10k.npz
.venv/bin/python -m benchmarks.finetune_defaults \
  --model runs/dev/relu-mnist=$MNIST --model runs/dev/silu-fmnist-cpu --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates defaults,fp32,lr-third,reuse-1,rate-defaults --minutes 4 --num-samples 500
