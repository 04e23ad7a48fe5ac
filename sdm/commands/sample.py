"""`sdm-sample`: draw images from any model the toolkit knows, through the shared sampler."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from sdm.commands import options as cli
from sdm.diffusion.images import save_grid, save_npz
from sdm.diffusion.sampler import sample
from sdm.io import write_json
from sdm.models.pretrained import load_model


@cli.command(help="Sample any model the toolkit knows (ANN, converted SNN, directly trained SNN); writes "
              "OUT/grid.png, OUT/samples.npz and OUT/report.json.")
@cli.ckpt_options
@click.option("--num-samples", type=click.IntRange(min=1), default=16, show_default=True)
@cli.sampling_options
@cli.threshold_scale_option
@cli.executor_option
@click.option("--out", type=click.Path(file_okay=False), default="samples", show_default=True)
@cli.device_option
def main(ckpt, allow_pickle, num_samples, sampler, steps, seed, batch_size, threshold_scale, executor, out, device):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"'{out}' is a file", param_hint="--out")
    loaded = load_model(ckpt, device=cli.resolve_device(device), allow_pickle=allow_pickle)
    for note in loaded.notes:
        click.echo(f"note: {note}", err=True)
    ran = cli.use_executor(loaded.model, executor)
    started = time.perf_counter()
    images = sample(loaded.model, loaded.scheduler_config, num_samples, sampler=sampler, steps=steps, seed=seed,
                    batch_size=batch_size, threshold_scale=threshold_scale)
    seconds = time.perf_counter() - started
    seeds = np.arange(seed, seed + num_samples)
    save_npz(images, out / "samples.npz", seeds=seeds)
    save_grid(images[:64], out / "grid.png", scale=2)
    report = {
        "ckpt": loaded.source, "model": type(loaded.model).__name__, **({"executor": ran} if ran else {}),
        "sampler": sampler, "steps": steps,
        "threshold_scale": threshold_scale, "num_samples": num_samples,
        "seeds": [int(seeds[0]), int(seeds[-1])], "device": str(next(loaded.model.parameters()).device),
        "seconds": round(seconds, 3), "images_per_second": round(num_samples / seconds, 3), "notes": loaded.notes,
    }
    write_json(report, out / "report.json")
    click.echo(f"{num_samples} samples ({sampler}-{steps}) in {seconds:.1f} s -> {out}/grid.png, {out}/samples.npz")


if __name__ == "__main__":
    main()
