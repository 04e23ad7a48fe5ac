"""`sdm-train`: direct training of the spiking UNet (pre-spike stage, then TSM fine-tuning)."""

from __future__ import annotations

import click
from accelerate import PartialState

from sdm.commands.options import command, resolve_device, training_options
from sdm.models.spiking_unet import READOUTS, SPIKING_PRESETS
from sdm.models.train_snn import DEFAULT_PRESET, STAGES, SNNTrainConfig, train_snn
from sdm.snn.neurons import NEURONS


@command(help="Train a spiking UNet with surrogate-gradient BPTT. Several GPUs: `accelerate launch -m "
              "sdm.commands.train ...` (or torchrun).")
@click.option("--T", "T", type=click.IntRange(min=1), default=None, help="Spiking steps [default: 4; TSM: the parent's].")
@click.option("--preset", type=click.Choice(list(SPIKING_PRESETS)), default=None,
              help=f"Architecture [default: {DEFAULT_PRESET}; TSM: the parent's, which a --preset must match].")
@click.option("--stage", type=click.Choice(STAGES), default="prespike", show_default=True)
@click.option("--init-from", default=None, help="The pre-spike run the TSM stage starts from.")
@click.option("--neuron", type=click.Choice(list(NEURONS)), default="lif", show_default=True)
@click.option("--readout", type=click.Choice(list(READOUTS)), default=None,
              help="What the output layer reads: the analog residual stream or the last spikes [default: analog; "
                   "TSM: the parent's].")
@training_options
def main(device, resume, **options):
    config = SNNTrainConfig(device=resolve_device(device), **options)
    out = train_snn(config, resume=resume, report=lambda line: click.echo(line, err=True))
    if PartialState().is_main_process:
        click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
