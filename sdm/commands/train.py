"""`sdm-train`: direct training of the spiking UNet (pre-spike stage, then TSM fine-tuning)."""

from __future__ import annotations

from dataclasses import fields

import click
from accelerate import PartialState

from sdm.commands.options import command, resolve_device, training_options
from sdm.diffusion.train_settings import TrainSettings
from sdm.models.train_snn import SNNTrainConfig, train_snn
from sdm.settings import options_of


@command(help="Train a spiking UNet with surrogate-gradient BPTT. Several GPUs: `accelerate launch -m "
              "sdm.commands.train ...` (or torchrun).")
@options_of(SNNTrainConfig, skip=[f.name for f in fields(TrainSettings)])
@training_options
def main(device, resume, **options):
    config = SNNTrainConfig(device=resolve_device(device), **options)
    out = train_snn(config, resume=resume, report=lambda line: click.echo(line, err=True))
    if PartialState().is_main_process:
        click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
