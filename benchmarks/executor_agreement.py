"""Do the step and rate executors describe the same model? FID-FMNIST of both, from the same seeds,
on converted SNNs, with a paired bootstrap of the difference and the per-image differences.

    make demo
    python -m benchmarks.executor_agreement --snn out/demo/snn --snn out/demo/finetune/snn --num-samples 500

In float64 the two executors agree to 1e-15 on a forward pass (tests/test_finetune.py). In float32
they round differently (the step executor sums T steps where the rate form reads their mean), a drive
within ~1e-6 of a spike-count boundary flips a spike, and the quantisers after it and the denoising
steps amplify the flip: images of a seed differ. What this benchmark measures is whether the samples
are equal in distribution: the FID difference and how sure it is.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from benchmarks.common import provenance, write_table
from sdm.commands.options import command


@command(help="FID-FMNIST of converted SNNs sampled by the step and the rate executor from the same seeds.")
@click.option("--snn", "snns", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="A converted SNN directory (repeatable).")
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--resamples", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False), default="out/bench/work", show_default=True,
              help="Resumable sample shards (keyed by model, executor and settings).")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results/executor_agreement",
              show_default=True)
def main(snns, num_samples, steps, resamples, work_dir, out):
    from convert import ConvertedUNet
    from sdm.diffusion.shards import gather_shards, keyed_work_dir, sample_sharded
    from sdm.metrics.bootstrap import paired_bootstrap
    from sdm.metrics.extractors import FMNISTExtractor
    from sdm.metrics.fmnist_extractor import load_reference
    from sdm.metrics.frechet import feature_statistics, frechet_distance
    from sdm.metrics.trajectory_energy import spiking_energy
    from sdm.models.pretrained import load_model

    extractor = FMNISTExtractor()
    mu, sigma, _ = load_reference()
    settings = {"sampler": "ddim", "steps": steps, "batch_size": 250, "threshold_scale": 1.0}
    rows = []
    for path in snns:
        scheduler_config = load_model(path).scheduler_config
        snn = ConvertedUNet.from_pretrained(path)
        drawn, features = {}, {}
        for executor in ("rate", "steps"):
            with snn.executing(executor):
                directory = keyed_work_dir(work_dir, snn, settings)
                shards = sample_sharded(snn, scheduler_config, num_samples, directory, settings=settings)
            drawn[executor] = gather_shards(shards, num_samples, 0)
            features[executor] = extractor.features(drawn[executor])[0]
        energy = spiking_energy(snn, scheduler_config, "ddim", steps)
        difference, _ = paired_bootstrap(features["steps"], features["rate"], mu, sigma, resamples=resamples)
        grey = np.abs(drawn["steps"].astype(np.int16) - drawn["rate"].astype(np.int16)).reshape(num_samples, -1)
        fids = {e: frechet_distance(*feature_statistics(f), mu, sigma) for e, f in features.items()}
        rows.append({"SNN": path, "T": snn.T, "FID rate": f"{fids['rate']:.2f}", "FID steps": f"{fids['steps']:.2f}",
                     "steps - rate (95 % interval)": f"{difference.observed:+.2f} ({difference.low:+.2f} to "
                                                     f"{difference.high:+.2f})",
                     "identical images": f"{int((grey.max(1) == 0).sum())} / {num_samples}",
                     "mean abs grey-level difference": f"{grey.mean():.2f}",
                     "energy (mJ / image)": f"{energy['per_image']['energy_mJ']:.3g}",
                     "energy / ANN": f"{energy['energy_ratio_snn_to_ann']:.3f}"})
    note = (f"FID-FMNIST (not comparable with Inception FID), N = {num_samples}, DDIM-{steps}, seeds 0..{num_samples - 1}, "
            f"both executors from the same seeds; paired bootstrap over the seeds ({resamples} resamples). Energy: "
            "the rate executor's accounting along sampling trajectories.")
    click.echo(write_table(rows, Path(out), provenance(__spec__.name), note))


if __name__ == "__main__":
    main()
