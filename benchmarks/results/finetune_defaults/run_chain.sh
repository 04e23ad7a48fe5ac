#!/usr/bin/env bash
# The development-set study of issue 30, one job at a time on the 2 cores. Resumable: finished runs and
# sample shards are reused, so a rerun only redraws what is missing. The models come from
# examples/dev_models.sh. The deep model (the slowest) runs fewer candidates: lr-third and fp32 were
# settled on the other two; its remedies (11.4) run steps, not minutes. Each model's table: benchmarks/results/finetune_defaults/MODEL/table.md.
set -euo pipefail
MNIST=../shared/data/mnist_10k.npz
RUN=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500)
"${RUN[@]}" --model runs/dev/relu-mnist=$MNIST --model runs/dev/silu-fmnist-cpu \
  --candidates defaults,fp32,lr-third,reuse-1,rate-defaults,short,short-pool
"${RUN[@]}" --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates defaults,reuse-1,rate-defaults,short,short-pool,norms-only,student-short,short-fixed-thresholds
