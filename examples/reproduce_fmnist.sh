#!/usr/bin/env bash
# Every Fashion-MNIST table of README.md and BENCHMARKS.md, in order (CPU: about 2 hours after the
# embedded model's training; sweeps skip finished cells when rerun). DATA=path/to/fashion_mnist.npz.
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

# 3. The directly trained SDM and the ANN of similar size.
examples/direct_training.sh
python -m benchmarks.direct_training --runs runs --num-samples 500 --steps 25 --scales 0.9,1.0,1.1

# 4. ANN vs converted (T = 4, 8; spike-encoded analog inputs at T = 4) vs directly trained.
sdm-convert --T 8 --num-samples 0 --out out/convert_T8
sdm-convert --T 4 --encode-analog --num-samples 0 --out out/convert_T4_encoded
sdm-compare --ann embedded:fmnist-ddpm --converted out/convert_T4/snn --converted out/convert_T8/snn \
  --converted out/convert_T4_encoded/snn --direct runs/sdm-tsm \
  --num-samples 500 --steps 25 --extractor fmnist --reference "$DATA" --executor rate --out $R/compare

# 5. Speed (cifar10-32 conversion time, SNN vs ANN forward) and the spike-encoded fidelity sweep.
python -m benchmarks.conversion_speed
sdm-sweep --T 2,4,8,16,32 --calib mse --neuron if --encode-analog --out $R/sweep_encoded

# 6. Fine-tuning converted SNNs (BENCHMARKS.md 5): FID at N = 2000, the curve, the rate-penalty frontier.
python -m benchmarks.energy_accounting
python -m benchmarks.finetune_fid --variants t4-first,t4-encoded-first,t8-first,t8-neuron-first \
  --finetune-steps 1200 --rate-penalty 0.1 --baseline t4-first,t4-encoded-first --num-samples 2000 --ann-fid 3.09
python -m benchmarks.finetune_fid --variants t4-first-channel --finetune-steps 1200 --num-samples 2000 \
  --ann-fid 3.09 --out $R/finetune_channel
python -m benchmarks.finetune_fid --variants t4-first-channel --finetune-steps 3000 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_long
python -m benchmarks.finetune_fid --variants t8-first-channel --finetune-steps 3000 --baseline none \
  --num-samples 2000 --ann-fid 3.09 --out $R/finetune_long_t8
python -m benchmarks.finetune_curve --variants t4-first,t8-first --steps 0,300,600,1200 --num-samples 500
python -m benchmarks.finetune_fid --variants t4-encoded-first --finetune-steps 1200 --rate-penalty 0,0.3 \
  --baseline none --num-samples 2000 --ann-fid 3.09 --out $R/rate_frontier

# 7. Execution speed against SpikingJelly (pip install -e '.[bench]'); run it on an otherwise idle machine.
python -m benchmarks.execution_speed
