"""`sdm-train`: direct training of the spiking UNet (pre-spike stage, then TSM fine-tuning)."""

from __future__ import annotations

import click

from sdm.cli import command, device_option, resolve_device
from sdm.neurons import NEURONS
from sdm.spiking_unet import SPIKING_PRESETS
from sdm.train_snn import STAGES, SNNTrainConfig, train_snn


@command(help="Train a spiking UNet with surrogate-gradient BPTT. Several GPUs: `accelerate launch -m "
              "sdm.commands.train ...` (or torchrun).")
@click.option("--data", required=True, help="A .npz archive, an image folder, or fashion-mnist | mnist | cifar10.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (a pipeline directory).")
@click.option("--T", "T", type=click.IntRange(min=1), default=None, help="Spiking steps [default: 4; TSM: the parent's].")
@click.option("--preset", type=click.Choice(list(SPIKING_PRESETS)), default="fmnist-small", show_default=True)
@click.option("--stage", type=click.Choice(STAGES), default="prespike", show_default=True)
@click.option("--init-from", default=None, help="The pre-spike run the TSM stage starts from.")
@click.option("--neuron", type=click.Choice(list(NEURONS)), default="lif", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hflip/--no-hflip", default=True, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--sample-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write a 4x4 sample grid every N steps (0: never).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@device_option
def main(device, resume, **options):
    config = SNNTrainConfig(device=resolve_device(device), **options)
    out = train_snn(config, resume=resume, report=lambda line: click.echo(line, err=True))
    click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
