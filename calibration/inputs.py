"""Calibration and probe inputs: pairs (x_t, t) that cover the whole range of diffusion times.

* trajectory (data-free): the model's own DDIM trajectories from fixed seeds;
* data: real images noised to uniformly drawn t.

Probe pairs, on which conversions are judged, come from trajectories of a seed range that
calibration never uses: a set spread evenly over t, plus extra pairs at t < 100, where the noise to
predict is smallest and conversion errors show first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import click
import torch

from sdm.diffusion.images import to_model_range
from sdm.diffusion.sampler import make_scheduler, trajectory
from sdm.errors import ConfigError, SDMError
from sdm.settings import option

SOURCES = ("trajectory", "data")
PROBE_SEED = 1 << 20
PROBE_TRAJECTORIES = 8
TRAJECTORIES = 16
TRAJECTORY_STEPS = 50     # DDIM steps of the trajectories that probes (and fine-tuning pools) are drawn from
LATE_T = 100              # below this t the noise to predict is smallest: conversion errors show first


@dataclass(frozen=True)
class CalibrationInputs:
    """Where calibration pairs come from, how many, and how many held-out probes judge the conversion."""

    source: str = field(default="trajectory", metadata=option(
        "--calib-source", "trajectory: the ANN's own DDIM trajectories (data-free); data: real images noised at "
        "random t.", type=click.Choice(SOURCES)))
    data: str | None = field(default=None, metadata=option(
        "--data", "Images for --calib-source data: a .npz, an image folder or a data set name."))
    samples: int = field(default=256, metadata=option("--calib-samples", "Calibration pairs (x_t, t).",
                                                      type=click.IntRange(min=1)))
    # Calibration's own batch and seed, apart from sampling's: each observer keeps a fixed number of
    # values per call, so the batch shapes the histograms, and the thresholds must not follow --batch-size.
    batch_size: int = field(default=64, metadata=option("--calib-batch-size", "Calibration pairs per forward pass.",
                                                        type=click.IntRange(min=1)))
    seed: int = field(default=0, metadata=option("--calib-seed", "Seed of the calibration pairs (trajectories or "
                                                 "noise).", type=click.IntRange(min=0)))
    probes: int = field(default=64, metadata=option(
        "--probes", "Held-out (x_t, t) pairs for the fidelity figures (half at t < 100).", type=click.IntRange(min=2)))

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("source", f"'{self.source}' is unknown: choose one of {', '.join(SOURCES)}")
        if self.source == "data" and not self.data:
            raise ConfigError("data", "is needed to calibrate on data: a .npz, an image folder or a data set name")
        for name in ("samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {self.seed}")
        if self.probes < 2:
            raise ConfigError("probes", f"must be at least 2, got {self.probes}")

    def pairs(self, model: torch.nn.Module, scheduler_config: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibration pairs (x_t, t) these settings describe."""
        from sdm.diffusion.data import load_dataset

        self.validate()
        images = None
        if self.source == "data":
            images = load_dataset(self.data, model.config.sample_size, model.config.in_channels)
        return calibration_pairs(model, scheduler_config, self.samples, source=self.source, data=images, seed=self.seed)

    def record(self) -> dict:
        """What the statistics file says about its inputs."""
        return {"source": self.source, "samples": self.samples, "seed": self.seed, "batch_size": self.batch_size,
                "data": self.data}


def calibration_pairs(
    model: torch.nn.Module, scheduler_config: dict, n: int, *, source: str = "trajectory",
    data: torch.Tensor | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` calibration pairs (x_t, t) on the CPU."""
    if n < 1:
        raise SDMError(f"calibration needs at least one pair, got n = {n}")
    if source == "trajectory":
        count = max(1, min(TRAJECTORIES, n // 32))  # at least 32 steps per trajectory: dense in t
        if seed + count > PROBE_SEED:
            raise ConfigError("seed", f"must be below {PROBE_SEED - count}: higher seeds are reserved for probes")
        steps = max(2, math.ceil(n / count))
        x, t, _ = trajectory(model, scheduler_config, range(seed, seed + count), steps=steps)
        keep = torch.linspace(0, len(t) - 1, n).round().long()
        return x[keep], t[keep]
    if source == "data":
        if data is None:
            raise SDMError("calibration on data needs the images (`data`)")
        return noised_pairs(data, scheduler_config, n, seed)
    raise SDMError(f"unknown calibration source '{source}': choose one of {', '.join(SOURCES)}")


def noised_pairs(images: torch.Tensor, scheduler_config: dict, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real uint8 NCHW images noised by the forward process at t ~ U{0..T-1}."""
    abar = make_scheduler("ddpm", scheduler_config).alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(images), (n,), generator=g)
    t = torch.randint(len(abar), (n,), generator=g)
    x0 = to_model_range(images[idx])
    noise = torch.randn(x0.shape, generator=g)
    a = abar[t].view(-1, 1, 1, 1).float()
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, t


def probe_pairs(
    model: torch.nn.Module, scheduler_config: dict, n: int = CalibrationInputs.probes
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, spread): `n` pairs spread evenly over t (`spread` True) and n/2 more at t < LATE_T."""
    x, t, _ = trajectory(model, scheduler_config, range(PROBE_SEED, PROBE_SEED + PROBE_TRAJECTORIES),
                         steps=TRAJECTORY_STEPS)
    order = torch.argsort(-t, stable=True)
    spread = order[torch.linspace(0, len(order) - 1, n).round().long()]
    low = torch.tensor([i for i in (t < LATE_T).nonzero().flatten().tolist() if i not in set(spread.tolist())])
    low = low[torch.linspace(0, len(low) - 1, min(n // 2, len(low))).round().long()] if len(low) else low
    keep = torch.cat([spread, low.long()])
    return x[keep], t[keep], torch.arange(len(keep)) < len(spread)


def spread_subset(probes: tuple[torch.Tensor, torch.Tensor, torch.Tensor], count: int = 8):
    """About `count` of the probe pairs spread over t (x_t, t): the inputs energy reports are measured on."""
    x, t, spread = probes
    every = max(1, int(spread.sum()) // count)
    return x[spread][::every], t[spread][::every]
