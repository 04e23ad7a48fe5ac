"""`sdm-train-ann`: train the ANN DDPM that conversion and comparisons start from."""

from __future__ import annotations

import click
from accelerate import PartialState

from sdm.commands.options import command, resolve_device, training_options
from sdm.models.presets import PRESETS
from sdm.models.train_ann import TrainConfig, train


@command(help="Train a diffusers UNet2DModel DDPM (epsilon objective, linear betas) on an image data set.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="fmnist-small", show_default=True)
@training_options
def main(device, resume, **options):
    config = TrainConfig(device=resolve_device(device), **options)
    out = train(config, resume=resume)
    if PartialState().is_main_process:
        click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
