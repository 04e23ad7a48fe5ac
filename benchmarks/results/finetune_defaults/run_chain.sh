#!/usr/bin/env bash
# The development-set study of issue 30 (BENCHMARKS.md 11), one job at a time on the 2 cores: a timed run
# shares the cores with nothing else. Resumable: finished runs and sample shards are reused, so a rerun
# only draws what is missing and rebuilds each model's table. The models come from examples/dev_models.sh.
# Candidates (see `--help`): `defaults` and `rate-defaults` are today's defaults in the two codes;
# `eps-loss` and `rate-eps-loss` the earlier ones (plain eps loss); NAME@M runs M minutes instead of 4;
# NAME:R@M converts and fine-tunes under the energy budget R. The deep model (the slowest) runs fewer
# candidates: lr-third and fp32 were settled on the other two; snr-2 (Min-SNR gamma 2) was tried on it
# alone. Tables: benchmarks/results/finetune_defaults/MODEL/table.md.
set -euo pipefail
MNIST=../shared/data/mnist_10k.npz
RUN=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500)
"${RUN[@]}" --model runs/dev/relu-mnist=$MNIST \
  --candidates defaults,eps-loss,fp32,lr-third,reuse-1,rate-eps-loss,short,short-pool,eps-loss@20,rate-eps-loss@20,defaults@20,defaults:0.4@20,rate-defaults@20
"${RUN[@]}" --model runs/dev/silu-fmnist-cpu \
  --candidates eps-loss,fp32,lr-third,reuse-1,rate-eps-loss,short,short-pool,eps-loss@20,eps-loss:0.45@20,defaults@20,rate-defaults@20,defaults:0.45@20
"${RUN[@]}" --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates defaults,eps-loss,reuse-1,rate-eps-loss,short,short-pool,norms-only,student-short,short-fixed-thresholds,late-0,eps-loss@20,defaults@20,rate-defaults,rate-defaults@20,defaults:0.4@20,snr-2@20
# The targets' runs rescored at N = 2000 (tables in benchmarks/results/finetune_defaults_n2000/): the runs
# above and their first 500 samples are reused, so only samples 500..1999 are drawn.
RESCORE=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 2000
         --tables benchmarks/results/finetune_defaults_n2000)
"${RESCORE[@]}" --model runs/dev/silu-mnist-deep=$MNIST --candidates defaults@20,rate-defaults@20,defaults:0.4@20,snr-2@20
"${RESCORE[@]}" --model runs/dev/relu-mnist=$MNIST --candidates defaults@20,rate-defaults@20,defaults:0.4@20
"${RESCORE[@]}" --model runs/dev/silu-fmnist-cpu --candidates defaults@20,rate-defaults@20,defaults:0.45@20
# Threshold guidance on the 20-minute runs of both codes (benchmarks/results/converted_guidance/MODEL/), then
# the weighted runs at 1.05 and N = 2000 (converted_guidance_n2000): sample shards shared with the runs above.
R=benchmarks/results/finetune_defaults
for N in 500 2000; do
  if [ $N = 500 ]; then G=(--scales 0.9,0.95,1.0,1.05,1.1 --num-samples 500); CODES=(defaults rate-defaults)
  else G=(--scales 1.0,1.05 --num-samples 2000 --out benchmarks/results/converted_guidance_n2000); CODES=(defaults); fi
  for M in silu-mnist-deep=$MNIST relu-mnist=$MNIST silu-fmnist-cpu; do
    D=${M%%=*}
    SNNS=(); for C in "${CODES[@]}"; do L=weighted; [ $C = rate-defaults ] && L=rate; SNNS+=(--snn $L=$R/$D/$C-20min/snn); done
    .venv/bin/python -m benchmarks.converted_guidance "${G[@]}" --model runs/dev/$M "${SNNS[@]}" --work $R/$D/work
  done
done
# T = 5 for the weighted code on the deep model (BENCHMARKS.md 11.9), in its own directory: the runs above are T = 4.
.venv/bin/python -m benchmarks.finetune_defaults --T 5 --minutes 4 --num-samples 500 \
  --out benchmarks/results/finetune_defaults_t5 --model runs/dev/silu-mnist-deep=$MNIST --candidates defaults@20
# Three times both learning rates at 20 minutes (BENCHMARKS.md 11.10-11.11), in its own directory, one
# invocation per model listing all of that model's runs (a finished run is reused; its table keeps them).
# The eighth session made the development models again with examples/dev_models.sh first (silu-fmnist-cpu
# with STEPS=1000, where the first one stopped) and ran lr-triple@20, with today's rates beside it on the
# deep model (defaults@20); the ninth added the rate code and the budgets, and today's rates under the deep
# model's budget on the same ANN (defaults:0.4@20).
LR=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500 --out benchmarks/results/finetune_lr)
"${LR[@]}" --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates defaults@20,lr-triple@20,rate-lr-triple@20,lr-triple:0.4@20,defaults:0.4@20
"${LR[@]}" --model runs/dev/relu-mnist=$MNIST --candidates lr-triple@20,rate-lr-triple@20,lr-triple:0.4@20
"${LR[@]}" --model runs/dev/silu-fmnist-cpu --candidates lr-triple@20,lr-triple:0.45@20
