#!/usr/bin/env bash
# Every Fashion-MNIST table of README.md and BENCHMARKS.md, in order (CPU: about 7 hours after the
# embedded ANN's training, 3 of them for the embedded SDM; sweeps skip finished cells when rerun).
# DATA=path/to/fashion_mnist.npz.
set -euo pipefail
DATA=${DATA:-../shared/data/fashion_mnist.npz}
R=benchmarks/results

# 1. The embedded model: train, package, measure (issue: foundation).
[ -f runs/fmnist-ddpm/log.jsonl ] || sdm-train-ann --data "$DATA" --out runs/fmnist-ddpm --preset fmnist-small \
  --steps 10000 --batch-size 64 --lr 5e-4 --warmup 500 --save-every 500 --sample-every 1000
python examples/package_embedded_model.py --run runs/fmnist-ddpm
python -m benchmarks.foundation --data "$DATA" --num-samples 10000
python examples/package_embedded_model.py --run runs/fmnist-ddpm --quality $R/foundation/results.json

# 2. Conversion of the embedded model (README's main job, FID against T, fidelity sweep).
sdm-convert --out out/convert_T4 --save-samples
python -m benchmarks.conversion_fid --T 4,8,16 --num-samples 2000
sdm-sweep --T 2,4,8,16,32 --calib max,percentile,mse --percentile 99.9 --neuron if,lif --out $R/sweep

# 3. The directly trained SDM at the embedded ANN's size: pre-spike, TSM and the equal-steps control,
#    the mechanisms' benchmark (TSM vs control, threshold-guidance sweep), packaged as embedded:fmnist-sdm.
DATA="$DATA" RUNS=runs examples/direct_training.sh

# 5. Speed (cifar10-32 conversion time, SNN vs ANN forward) and the spike-encoded fidelity sweep.
python -m benchmarks.conversion_speed
sdm-sweep --T 2,4,8,16,32 --calib mse --neuron if --encode-analog --out $R/sweep_encoded

# 6. Fine-tuning converted SNNs (BENCHMARKS.md 5): FID at N = 2000, the curve (5.3's encoded row with a rate penalty
#    came from the since-removed --rate-penalty 0.1).
python -m benchmarks.energy_accounting
python -m benchmarks.finetune_fid --variants t4-first,t4-encoded-first,t8-first,t8-neuron-first \
  --finetune-steps 1200 --baseline t4-first,t4-encoded-first --num-samples 2000 --ann-fid 3.09
python -m benchmarks.finetune_fid --variants t4-first-channel --finetune-steps 1200 --num-samples 2000 \
  --ann-fid 3.09 --out $R/finetune_channel
python -m benchmarks.finetune_fid --variants t4-first-channel --finetune-steps 3000 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_long
python -m benchmarks.finetune_fid --variants t8-first-channel --finetune-steps 3000 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_long_t8
python -m benchmarks.finetune_curve --variants t4-first,t8-first --steps 0,300,600,1200 --num-samples 500
# (5.3's rate-penalty frontier used --rate-penalty, since replaced by --energy-penalty / --energy-budget: 7.3)

# 7. Like for like (README): the embedded ANN, its conversions at T = 4 and 8, the fine-tuned ones of
#    section 6, and the embedded SDM, same seeds and sampler.
sdm-compare --converted $R/finetune_long/t4-first-channel/finetune/snn \
  --converted $R/finetune_long_t8/t8-first-channel/finetune/snn --num-samples 1000 --extractor fmnist --out $R/compare

# 7b. Faster fine-tuning (BENCHMARKS.md 8): candidates against wall time, one step profiled, 30-minute runs.
python -m benchmarks.finetune_speed --candidates baseline,lr3,lr3-features-bf16,lr3-bf16 --steps 1000 \
  --snapshots 2 --num-samples 500 --ann-fid 3.03
python -m benchmarks.finetune_profile --snn $R/finetune_speed/t4-first-channel/snn
python -m benchmarks.finetune_fid --variants t4-first-channel --finetune-steps 1600 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_fast
python -m benchmarks.finetune_fid --variants t8-first-channel --finetune-steps 1600 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_fast_t8

# 8. Execution speed against SpikingJelly (pip install -e '.[bench]'); run it on an otherwise idle machine.
python -m benchmarks.execution_speed
