"""`sdm-train-ann`: train the ANN DDPM that conversion and comparisons start from."""

from __future__ import annotations

from dataclasses import fields

import click
from accelerate import PartialState

from sdm.commands.options import command, resolve_device, training_options
from sdm.diffusion.train_settings import TrainSettings
from sdm.models.train_ann import TrainConfig, train
from sdm.settings import options_of


@command(help="Train a diffusers UNet2DModel DDPM (epsilon objective, linear betas) on an image data set.")
@options_of(TrainConfig, skip=[f.name for f in fields(TrainSettings)])
@training_options
def main(device, resume, **options):
    config = TrainConfig(device=resolve_device(device), **options)
    out = train(config, resume=resume)
    if PartialState().is_main_process:
        click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
