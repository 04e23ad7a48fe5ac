#!/usr/bin/env bash
# The development-set study of issue 30 (BENCHMARKS.md 11), one job at a time on the 2 cores: a timed run
# shares the cores with nothing else. Resumable: finished runs and sample shards are reused, so a rerun
# only draws what is missing and rebuilds each model's table. The models come from examples/dev_models.sh.
# Candidates (see `--help`): `lr-3e-4` and `rate-lr-3e-4` are the defaults of BENCHMARKS.md 11.6-11.11 in
# the two codes (the tables, written then, call them `defaults`); `eps-loss` and `rate-eps-loss` the
# earlier ones (plain eps loss); NAME@M runs M minutes instead of 4;
# NAME:R@M converts and fine-tunes under the energy budget R. The deep model (the slowest) runs fewer
# candidates: lr-third and fp32 were settled on the other two; snr-2 (Min-SNR gamma 2) was tried on it
# alone. Tables: benchmarks/results/finetune_defaults/MODEL/table.md.
set -euo pipefail
MNIST=../shared/data/mnist_10k.npz
RUN=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500)
"${RUN[@]}" --model runs/dev/relu-mnist=$MNIST \
  --candidates lr-3e-4,eps-loss,fp32,lr-third,reuse-1,rate-eps-loss,short,short-pool,eps-loss@20,rate-eps-loss@20,lr-3e-4@20,lr-3e-4:0.4@20,rate-lr-3e-4@20
"${RUN[@]}" --model runs/dev/silu-fmnist-cpu \
  --candidates eps-loss,fp32,lr-third,reuse-1,rate-eps-loss,short,short-pool,eps-loss@20,eps-loss:0.45@20,lr-3e-4@20,rate-lr-3e-4@20,lr-3e-4:0.45@20
"${RUN[@]}" --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates lr-3e-4,eps-loss,reuse-1,rate-eps-loss,short,short-pool,norms-only,student-short,short-fixed-thresholds,late-0,eps-loss@20,lr-3e-4@20,rate-lr-3e-4,rate-lr-3e-4@20,lr-3e-4:0.4@20,snr-2@20
# The targets' runs rescored at N = 2000 (tables in benchmarks/results/finetune_defaults_n2000/): the runs
# above and their first 500 samples are reused, so only samples 500..1999 are drawn.
RESCORE=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 2000
         --tables benchmarks/results/finetune_defaults_n2000)
"${RESCORE[@]}" --model runs/dev/silu-mnist-deep=$MNIST --candidates lr-3e-4@20,rate-lr-3e-4@20,lr-3e-4:0.4@20,snr-2@20
"${RESCORE[@]}" --model runs/dev/relu-mnist=$MNIST --candidates lr-3e-4@20,rate-lr-3e-4@20,lr-3e-4:0.4@20
"${RESCORE[@]}" --model runs/dev/silu-fmnist-cpu --candidates lr-3e-4@20,rate-lr-3e-4@20,lr-3e-4:0.45@20
# Threshold guidance on the 20-minute runs of both codes (benchmarks/results/converted_guidance/MODEL/), then
# the weighted runs at 1.05 and N = 2000 (converted_guidance_n2000): sample shards shared with the runs above.
R=benchmarks/results/finetune_defaults
for N in 500 2000; do
  if [ $N = 500 ]; then G=(--scales 0.9,0.95,1.0,1.05,1.1 --num-samples 500); CODES=(lr-3e-4 rate-lr-3e-4)
  else G=(--scales 1.0,1.05 --num-samples 2000 --out benchmarks/results/converted_guidance_n2000); CODES=(lr-3e-4); fi
  for M in silu-mnist-deep=$MNIST relu-mnist=$MNIST silu-fmnist-cpu; do
    D=${M%%=*}
    SNNS=(); for C in "${CODES[@]}"; do L=weighted; [ $C = rate-lr-3e-4 ] && L=rate; SNNS+=(--snn $L=$R/$D/$C-20min/snn); done
    .venv/bin/python -m benchmarks.converted_guidance "${G[@]}" --model runs/dev/$M "${SNNS[@]}" --work $R/$D/work
  done
done
# T = 5 for the weighted code on the deep model (BENCHMARKS.md 11.9), in its own directory: the runs above are T = 4.
.venv/bin/python -m benchmarks.finetune_defaults --T 5 --minutes 4 --num-samples 500 \
  --out benchmarks/results/finetune_defaults_t5 --model runs/dev/silu-mnist-deep=$MNIST --candidates lr-3e-4@20
# Three times both learning rates at 20 minutes (BENCHMARKS.md 11.10-11.11), in its own directory, one
# invocation per model listing all of that model's runs (a finished run is reused; its table keeps them).
# The eighth session made the development models again with examples/dev_models.sh first (silu-fmnist-cpu
# with STEPS=1000, where the first one stopped) and ran lr-triple@20, with the rates of then beside it on the
# deep model (lr-3e-4@20); the ninth added the rate code and the budgets, and the rates of then under the
# deep model's budget on the same ANN (lr-3e-4:0.4@20); the tenth the rate code on silu-fmnist-cpu.
LR=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500 --out benchmarks/results/finetune_lr)
"${LR[@]}" --model runs/dev/silu-mnist-deep=$MNIST \
  --candidates lr-3e-4@20,lr-triple@20,rate-lr-triple@20,lr-triple:0.4@20,lr-3e-4:0.4@20 --paired lr-triple@20,lr-3e-4@20
"${LR[@]}" --model runs/dev/relu-mnist=$MNIST --candidates lr-triple@20,rate-lr-triple@20,lr-triple:0.4@20
"${LR[@]}" --model runs/dev/silu-fmnist-cpu --candidates lr-triple@20,rate-lr-triple@20,lr-triple:0.45@20
# The embedded model, 20 minutes, N = 2000: the defaults of 11.6 (BENCHMARKS.md 11.6), then three times their
# rates beside them on the same cores (11.12), with the paired bootstrap of the two.
.venv/bin/python -m benchmarks.finetune_defaults --minutes 20 --num-samples 2000 --model embedded:fmnist-ddpm \
  --candidates lr-3e-4 --out benchmarks/results/finetune_defaults_embedded
.venv/bin/python -m benchmarks.finetune_defaults --minutes 20 --num-samples 2000 --model embedded:fmnist-ddpm \
  --candidates lr-triple,lr-3e-4 --out benchmarks/results/finetune_lr_embedded --paired lr-triple,lr-3e-4
# The site choice weighing its error by Min-SNR (BENCHMARKS.md 11.13): the conversions under each model's
# budget (@0: no fine-tuning), and the deep model's fine-tuned under it.
SITES=(.venv/bin/python -m benchmarks.finetune_defaults --minutes 4 --num-samples 500 --out benchmarks/results/finetune_sites)
"${SITES[@]}" --model runs/dev/silu-mnist-deep=$MNIST --candidates lr-triple:0.4@0,lr-triple:0.4@20
"${SITES[@]}" --model runs/dev/relu-mnist=$MNIST --candidates lr-triple:0.4@0
"${SITES[@]}" --model runs/dev/silu-fmnist-cpu --candidates lr-triple:0.45@0
