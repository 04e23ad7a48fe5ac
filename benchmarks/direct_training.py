"""FID-FMNIST of the directly trained SDM: pre-spike, TSM, TSM with threshold guidance, and the ANN
of similar size trained for as many steps.

    python -m benchmarks.direct_training --runs runs --num-samples 1000 --steps 25
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from sdm.cli import CommaList, command
from sdm.energy import E_MAC_PJ, ann_macs
from sdm.images import save_comparison
from sdm.pretrained import load_model
from sdm.training import read_run_config, steps_trained


def _energy(model, scheduler_config, steps, scale):
    import torch

    from sdm.commands.evaluate import spiking_energy

    report = spiking_energy(model, scheduler_config, "ddim", steps, scale)
    if report is not None:
        return report["per_image"]["energy_mJ"], report["mean_input_firing_rate"]
    size, channels = model.config.sample_size, model.config.in_channels
    macs = ann_macs(model, torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long))
    return macs * E_MAC_PJ * steps / 1e9, None


@command(help="FID-FMNIST of pre-spike, TSM and guided TSM spiking UNets beside an ANN of similar size.")
@click.option("--runs", type=click.Path(file_okay=False), default="runs", show_default=True)
@click.option("--scales", type=CommaList(float), default="0.9,0.95,1.0,1.05,1.1", show_default=True,
              help="Threshold-guidance scales swept on the TSM model.")
@click.option("--num-samples", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/direct_training", show_default=True)
def main(runs, scales, num_samples, steps, out):
    runs, out = Path(runs), Path(out)
    meta = provenance(__spec__.name)
    rows, grids = [], []
    plan = [("ANN", "ann-baseline", 1.0), ("SDM pre-spike", "sdm-prespike", 1.0)]
    plan += [(f"SDM TSM, threshold scale {s:g}", "sdm-tsm", s) for s in scales]
    for name, run, scale in plan:
        loaded = load_model(runs / run)
        preset = (read_run_config(runs / run) or {}).get("model", {}).get("preset")
        params = sum(p.numel() for p in loaded.model.parameters())
        label = f"{name} (`{preset}`, {params / 1e6:.2f}M)"
        result, images, _ = sample_metric(loaded.model, loaded.scheduler_config, num_samples,
                                          out / "work" / f"{run}_{scale:g}", steps=steps, threshold_scale=scale)
        energy, rate = _energy(loaded.model, loaded.scheduler_config, steps, scale)
        rows.append({"model": label, "training steps": steps_trained(runs / run), "FID-FMNIST": f"{result.value:.3f}",
                     "energy / image (mJ)": f"{energy:.4g}", "firing rate": "" if rate is None else f"{rate:.3f}"})
        if scale == 1.0:
            grids.append((name.replace(", threshold scale 1", ""), images[:16]))
    save_comparison(grids, out / "samples.png")
    text = write_table(rows, out, meta, f"N = {num_samples}, DDIM-{steps}, seeds 0..{num_samples - 1}; FID-FMNIST is "
                       "not comparable with Inception FID.", num_samples=num_samples, steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
