#!/usr/bin/env bash
# The weighted-code rows of BENCHMARKS section 10, in order, resumable: a step whose output exists is skipped.
# Run from the repository root: bash benchmarks/results/weighted/run_chain.sh (after examples/dev_models.sh
# for the code_defaults step).
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
    --converted out/wft4-choice05/snn $COMMON --out $R/compare-w4-budget0.5
# 3. The defaults: code x threshold granularity at T = 4 on the embedded model and the development DDPMs
#    (waits for examples/dev_models.sh when it is still training them).
while pgrep -f examples/dev_models.sh > /dev/null; do sleep 20; done
run benchmarks/results/code_defaults/results.json $BIN/python -m benchmarks.code_defaults --model embedded:fmnist-ddpm \
    --model runs/dev/relu-mnist=../shared/data/mnist_10k.npz --model runs/dev/silu-fmnist-cpu --num-samples 500
# 4. The executors on the weighted code, float32, N = 500.
run benchmarks/results/executor_agreement_weighted/results.json $BIN/python -m benchmarks.executor_agreement \
    --snn out/w4-choice05/snn --num-samples 500 --out benchmarks/results/executor_agreement_weighted
# 5. Weighted T = 3, sites chosen under budget 0.2 (every analog input a candidate for spike encoding), fine-tuned under it.
run out/w3-choice02/snn/config.json $BIN/sdm-convert --out out/w3-choice02 --T 3 --coding weighted --per-channel \
    --energy-budget 0.2 --num-samples 16
run out/wft3-choice02/snn/config.json $BIN/sdm-finetune --snn out/w3-choice02/snn --steps 1000 --energy-budget 0.2 --out out/wft3-choice02
run $R/compare-w3-budget0.2/compare.json $BIN/sdm-compare --ann none --convert-T none --direct none \
    --converted out/wft3-choice02/snn $COMMON --out $R/compare-w3-budget0.2
# 6. Weighted T = 3, 5, not fine-tuned.
run $R/compare-w35/compare.json $BIN/sdm-compare --convert-T 3,5 --coding weighted --direct none $COMMON --out $R/compare-w35
echo "== $(date +%T) chain done"
