"""DDPM training of a diffusers UNet2DModel: the ANN that conversion starts from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.training import train_diffusion
from sdm.models.presets import PRESETS, build_unet, preset_config
from sdm.settings import option


@dataclass
class TrainConfig(TrainSettings):
    """An ANN training run: the shared settings plus the UNet2DModel preset."""

    preset: str = field(default="fmnist-small", metadata=option("--preset", type=click.Choice(list(PRESETS))))

    def validate(self) -> None:
        super().validate()
        preset_config(self.preset)


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train the UNet2DModel preset `config.preset`; returns the pipeline directory."""
    config.validate()
    return train_diffusion(config, {"preset": config.preset}, lambda: build_unet(config.preset),
                           resume=resume, progress=progress, on_step=on_step)
