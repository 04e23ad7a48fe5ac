"""DDPM training of a diffusers UNet2DModel: the ANN that conversion starts from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.training import train_diffusion
from sdm.errors import ConfigError
from sdm.models.presets import PRESETS, build_unet, preset_config
from sdm.settings import option

ACTIVATIONS = ("silu", "relu")


@dataclass
class TrainConfig(TrainSettings):
    """An ANN training run: the shared settings plus the UNet2DModel preset."""

    preset: str = field(default="fmnist-small", metadata=option("--preset", type=click.Choice(list(PRESETS))))
    act_fn: str = field(default="silu", metadata=option(
        "--act-fn", "The UNet's activation (diffusers' act_fn): silu as in google/ddpm-cifar10-32, or relu.",
        type=click.Choice(ACTIVATIONS)))

    def validate(self) -> None:
        super().validate()
        preset_config(self.preset)
        if self.act_fn not in ACTIVATIONS:
            raise ConfigError("act_fn", f"'{self.act_fn}' is unknown: choose one of {', '.join(ACTIVATIONS)}")


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train the UNet2DModel preset `config.preset` with `config.act_fn`; returns the pipeline directory."""
    config.validate()
    return train_diffusion(config, {"preset": config.preset, "act_fn": config.act_fn},
                           lambda: build_unet(config.preset, act_fn=config.act_fn),
                           resume=resume, progress=progress, on_step=on_step)
