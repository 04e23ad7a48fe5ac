#!/usr/bin/env bash
# The CIFAR-10 comparison on google/ddpm-cifar10-32 with Inception FID: ANN, converted SNN, directly
# trained SDM. Needs network access (model hub, Inception weights, the CIFAR-10 test split) and, for
# the training stages, GPUs: `accelerate launch -m sdm.commands.train ...` spreads them over all.
set -euo pipefail
N=${N:-10000}
sdm-convert --ckpt google/ddpm-cifar10-32 --T 4 --out out/cifar10_T4 --num-samples 16 --device cuda
sdm-convert --ckpt google/ddpm-cifar10-32 --T 8 --out out/cifar10_T8 --num-samples 0 --device cuda
accelerate launch -m sdm.commands.train --data cifar10 --preset cifar10-32 --T 4 --steps 200000 \
  --batch-size 128 --out runs/c10-prespike --device cuda
accelerate launch -m sdm.commands.train --data cifar10 --stage tsm --init-from runs/c10-prespike \
  --steps 50000 --batch-size 128 --out runs/c10-tsm --device cuda
sdm-compare --ann google/ddpm-cifar10-32 --converted out/cifar10_T4/snn --direct runs/c10-tsm \
  --num-samples "$N" --steps 100 --extractor inception --reference cifar10 --executor rate \
  --out out/cifar10_compare --device cuda
