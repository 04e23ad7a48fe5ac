#!/usr/bin/env bash
# The weighted-code rows of BENCHMARKS section 10, in order, resumable: a step whose output exists is skipped.
# Run from the repository root: bash benchmarks/results/weighted/run_chain.sh
set -u
BIN=.venv/bin
COMMON="--num-samples 2000 --extractor fmnist --reference ../shared/data/fashion_mnist.npz --work-dir benchmarks/results/direct_training/work"
R=benchmarks/results/weighted
run() { local done_file=$1; shift; [ -e "$done_file" ] && return 0; echo "== $(date +%T) $*"; "$@" || echo "!! failed: $*"; }
# 1. Weighted T = 4, not fine-tuned (sdm-compare's recipe: per-channel, first ResNet analog).
run $R/compare-w4/compare.json $BIN/sdm-compare --convert-T 4 --coding weighted --direct none $COMMON --out $R/compare-w4
# 2. Weighted T = 4, sites chosen under budget 0.5, then fine-tuned under it.
run out/w4-choice05/snn/config.json $BIN/sdm-convert --out out/w4-choice05 --T 4 --coding weighted --per-channel \
    --analog-sites 'down_blocks.0.resnets.0.*' --energy-budget 0.5 --num-samples 16
run out/wft4-choice05/snn/config.json $BIN/sdm-finetune --snn out/w4-choice05/snn --steps 2000 --energy-budget 0.5 --out out/wft4-choice05
run $R/compare-w4-budget0.5/compare.json $BIN/sdm-compare --ann none --convert-T none --direct none \
    --converted out/w4-choice05/snn --converted out/wft4-choice05/snn $COMMON --out $R/compare-w4-budget0.5
# 3. Weighted T = 3, every analog input a candidate for spike encoding, chosen under budget 0.2, fine-tuned under it.
run out/w3-choice02/snn/config.json $BIN/sdm-convert --out out/w3-choice02 --T 3 --coding weighted --per-channel \
    --energy-budget 0.2 --num-samples 16
run out/wft3-choice02/snn/config.json $BIN/sdm-finetune --snn out/w3-choice02/snn --steps 2000 --energy-budget 0.2 --out out/wft3-choice02
run $R/compare-w3-budget0.2/compare.json $BIN/sdm-compare --ann none --convert-T none --direct none \
    --converted out/wft3-choice02/snn $COMMON --out $R/compare-w3-budget0.2
# 4. Weighted T = 2, 3, 5, not fine-tuned.
run $R/compare-w235/compare.json $BIN/sdm-compare --convert-T 2,3,5 --coding weighted --direct none $COMMON --out $R/compare-w235
echo "== $(date +%T) chain done"
