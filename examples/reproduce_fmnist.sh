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
