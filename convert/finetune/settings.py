"""FinetuneSettings: what a fine-tuning run is configured by, and what its student must be."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import click
from torch import nn

from calibration.graph import architecture_fingerprint
from convert.finetune.distill import PAIR_REUSE, PAIR_SOURCES, pool_size
from convert.model import ConvertedUNet
from sdm.diffusion.snr import MIN_SNR_GAMMA
from sdm.diffusion.train_settings import PRECISIONS
from sdm.errors import ConfigError
from sdm.settings import option

TRAINABLE = ("thresholds", "norms", "all")


@dataclass
class FinetuneSettings:
    """What a fine-tuning run is configured by; the fields with options are `sdm-finetune`'s flags
    (and `sdm-convert --finetune-*`'s)."""

    steps: int = field(default=2000, metadata=option("--steps", "Fine-tuning steps.", type=click.IntRange(min=1)))
    minutes: float | None = field(default=None, metadata=option(
        "--minutes", "Fine-tune for this many minutes of wall time instead of a step count (the teacher's pool "
        "included): as many steps as fit, estimated from trial steps and fixed by the first steps' speed; the "
        "warm-up and the cosine decay fit them, and the report states the steps done.",
        type=click.FloatRange(min=0, min_open=True)))
    batch_size: int = field(default=32, metadata=option("--batch-size", "Fine-tuning batch.",
                                                        type=click.IntRange(min=1)))
    # Nine times the first rates (BENCHMARKS.md 8.1: 3x; 11.10-11.12: 3x again, chosen on the development set:
    # the deep model gains 0.09 of its ANN's FID in 20 minutes, the embedded one loses 0.06, the rest tie).
    lr: float = field(default=9e-4, metadata=option(
        "--lr", "Learning rate of weights, biases and norm parameters (cosine decay after warm-up).",
        type=click.FloatRange(min=0, min_open=True)))
    threshold_lr: float = field(default=9e-3, metadata=option(
        "--threshold-lr", "Relative learning rate of the thresholds (fraction per step).",
        type=click.FloatRange(min=0)))
    source: str = field(default="trajectory", metadata=option(
        "--source", "trajectory: the teacher's DDIM paths (data-free); data: real images noised at random t.",
        type=click.Choice(PAIR_SOURCES)))
    data: str | None = field(default=None, metadata=option(
        "--data", "Images for --source data: .npz, image folder or data set name."))
    pairs: int | None = field(default=None, metadata=option(
        "--pairs", "(x_t, t) pairs in the training pool, each labelled with the teacher's eps [default: sized "
        "to the run, each pair drawn about 4 times].", type=click.IntRange(min=1)))
    pair_reuse: float = field(default=PAIR_REUSE, metadata=option(
        "--pair-reuse", "Draws of each pool pair over the run, without --pairs: the pool holds the run's draws over "
        "this (a lower value: more trajectories, at one teacher evaluation per pair).",
        type=click.FloatRange(min=0, min_open=True)))
    # Both chosen on the development set (BENCHMARKS.md 11.6): the high-noise steps decide what a sample
    # shows, and the plain eps loss gave them about 1 % of its weight.
    late_share: float = field(default=0.0, metadata=option(
        "--late-share", "Share of each batch drawn from t < 100, the fine-detail steps (0: no share reserved, "
        "every pool pair drawn alike).", type=click.FloatRange(0, 1, max_open=True)))
    snr_gamma: float = field(default=MIN_SNR_GAMMA, metadata=option(
        "--snr-gamma", "Weight each pair's eps error by min(SNR, G) / SNR of its t (Min-SNR-gamma, Hang et al. "
        "2023): the low-noise steps, whose eps errors are largest, stop drowning out the high-noise steps that "
        "decide what a sample shows; 0 weighs every pair 1.", type=click.FloatRange(min=0)))
    train: str = field(default="all", metadata=option(
        "--train", "What learns besides the thresholds: nothing more, the norms' affine parameters, or all.",
        type=click.Choice(TRAINABLE)))
    feature_weight: float = field(default=0.0, metadata=option(  # no faster per minute here (BENCHMARKS.md 8.1)
        "--feature-weight", "Weight of feature distillation: every spiking site's input matched to the ANN's at "
        "the same graph position, as a relative error.", type=click.FloatRange(min=0)))
    precision: str = field(default="auto", metadata=option(
        "--precision", "bf16: autocast the training steps; auto: bf16 where it is native (GPUs, CPUs with "
        "AVX512-BF16 or AMX), else fp32.", type=click.Choice(PRECISIONS)))
    energy_penalty: float = field(default=0.0, metadata=option(
        "--energy-penalty", "Weight in the loss of the spikes' share of the SNN / ANN energy ratio (each spike "
        "priced by the synapses it reaches): trade energy for quality.", type=click.FloatRange(min=0)))
    energy_budget: float | None = field(default=None, metadata=option(
        "--energy-budget", "An SNN / ANN energy ratio per image to meet: the energy penalty's weight adapts during "
        "fine-tuning (starting from --energy-penalty); the report says whether it was met. sdm-convert first "
        "chooses which activations spike and which analog inputs are spike-encoded to meet it.",
        type=click.FloatRange(min=0, min_open=True)))
    warmup: int = 50
    ema_decay: float = 0.999
    seed: int = field(default=0, metadata=option("--seed", "Seed of the pool and the batches.",
                                                 type=click.IntRange(min=0)))
    save_every: int = 250
    device: str = "cpu"

    @property
    def pool(self) -> int:
        """Pairs in the pool: `pairs`, or the run's draws over `pair_reuse`."""
        return self.pairs if self.pairs is not None else pool_size(self.steps, self.batch_size, self.pair_reuse)

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError("steps", f"must be at least 1, got {self.steps}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ConfigError("minutes", f"must be a positive number of minutes, got {self.minutes}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.pool < self.batch_size:
            raise ConfigError("pairs", f"({self.pool}) must be at least the batch size ({self.batch_size})")
        if not (self.pair_reuse > 0 and math.isfinite(self.pair_reuse)):
            raise ConfigError("pair_reuse", f"must be a positive number of draws, got {self.pair_reuse}")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be positive, got {self.lr}")
        if not self.threshold_lr >= 0:
            raise ConfigError("threshold_lr", f"must be non-negative, got {self.threshold_lr}")
        if self.threshold_lr == 0 and self.train == "thresholds":
            raise ConfigError("threshold_lr", "is 0 while only the thresholds train: nothing would learn")
        for name, value, choices in (("source", self.source, PAIR_SOURCES), ("train", self.train, TRAINABLE),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in choices:
                raise ConfigError(name, f"'{value}' is unknown: choose one of {', '.join(choices)}")
        if self.source == "data" and not self.data:
            raise ConfigError("data", "is needed to fine-tune on data: a .npz, an image folder or a data set name")
        if not 0.0 <= self.late_share < 1.0:
            raise ConfigError("late_share", f"must lie in [0, 1), got {self.late_share}")
        for name in ("energy_penalty", "feature_weight", "snr_gamma"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number >= 0, got {value}")
        if self.energy_budget is not None and not (self.energy_budget > 0 and math.isfinite(self.energy_budget)):
            raise ConfigError("energy_budget", f"must be a positive ratio to the ANN's energy, got {self.energy_budget}")


def check_student(snn: nn.Module, teacher: nn.Module | None = None) -> None:
    """The student must be a window-mode converted SNN (of the teacher's architecture, given one)."""
    if not isinstance(snn, ConvertedUNet):
        raise ConfigError("snn", f"must be a converted SNN (sdm-convert's OUT/snn), not a {type(snn).__name__}")
    if snn.analog_mode != "window":
        raise ConfigError("snn", "is a running-mode SNN: fine-tuning trains the exact rate form, which needs one "
                          "converted in window mode")
    if teacher is None:
        return
    if isinstance(teacher, ConvertedUNet) or not hasattr(teacher, "config"):
        raise ConfigError("teacher", f"must be the ANN the SNN was converted from, not a {type(teacher).__name__}")
    if architecture_fingerprint(dict(teacher.config)) != snn.config["architecture_fingerprint"]:
        raise ConfigError("teacher", "has an architecture that differs from the SNN's: pass the ANN it was "
                          "converted from")
