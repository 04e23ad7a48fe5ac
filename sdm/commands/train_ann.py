"""`sdm-train-ann`: train the ANN DDPM that conversion and comparisons start from."""

from __future__ import annotations

import click

from sdm.cli import command, device_option, resolve_device
from sdm.presets import PRESETS
from sdm.train_ann import TrainConfig, train


@command(help="Train a diffusers UNet2DModel DDPM (epsilon objective, linear betas) on an image data set.")
@click.option("--data", required=True, help="A .npz archive, an image folder, or fashion-mnist | mnist | cifar10.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (a pipeline directory).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="fmnist-small", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=500, show_default=True, help="Linear LR warm-up steps.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flips.")
@click.option("--fit", type=click.Choice(["auto", "pad", "resize"]), default="auto", show_default=True,
              help="How images meet the preset's size.")
@click.option("--save-every", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--sample-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write a 4x4 sample grid every N steps (0: never).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@device_option
def main(device, resume, **options):
    config = TrainConfig(device=resolve_device(device), **options)
    out = train(config, resume=resume)
    click.echo(f"trained {config.steps} steps; pipeline directory: {out} (use it as --ckpt)")


if __name__ == "__main__":
    main()
