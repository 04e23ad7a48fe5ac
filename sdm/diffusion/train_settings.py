"""TrainSettings: what every diffusion training run is configured by, and where bf16 pays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import click

from sdm.errors import ConfigError
from sdm.settings import option

PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16(device: str) -> bool:
    """Whether `device` computes in bf16 natively (a GPU, or a CPU with AVX512-BF16 or AMX), where bf16
    autocast pays: elsewhere a CPU emulates it, slower than fp32."""
    if device.startswith("cuda"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def autocasts_bf16(precision: str, device: str) -> bool:
    """Whether a run at `precision` on `device` autocasts to bf16: always for bf16, where it is native
    for auto (`native_bf16`), never for fp32. The one meaning of `--precision` in every command."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


@dataclass
class TrainSettings:
    """What every diffusion training run is configured by, whatever the model (the fields with options
    are the flags of `sdm-train` and `sdm-train-ann`)."""

    data: str = field(metadata=option("--data", "A .npz archive, an image folder, or fashion-mnist | mnist | cifar10."))
    out: str = field(metadata=option("--out", "Run directory (a pipeline directory).",
                                     type=click.Path(file_okay=False)))
    steps: int = field(default=10_000, metadata=option("--steps", type=click.IntRange(min=1)))
    batch_size: int = field(default=64, metadata=option("--batch-size", "Global batch (split over processes).",
                                                        type=click.IntRange(min=1)))
    lr: float = field(default=2e-4, metadata=option("--lr", type=click.FloatRange(min=0, min_open=True)))
    warmup: int = field(default=500, metadata=option("--warmup", "Linear LR warm-up steps.",
                                                     type=click.IntRange(min=0)))
    weight_decay: float = field(default=0.0, metadata=option("--weight-decay", type=click.FloatRange(min=0)))
    ema_decay: float = field(default=0.999, metadata=option("--ema-decay", type=click.FloatRange(0, 1, max_open=True)))
    grad_clip: float = field(default=1.0, metadata=option("--grad-clip", type=click.FloatRange(min=0, min_open=True)))
    seed: int = field(default=0, metadata=option("--seed", type=int))
    hflip: bool = field(default=True, metadata=option("--hflip/--no-hflip", "Random horizontal flips."))
    fit: str = field(default="auto", metadata=option("--fit", "How images meet the model's size.",
                                                     type=click.Choice(["auto", "pad", "resize"])))
    save_every: int = field(default=1000, metadata=option("--save-every", type=click.IntRange(min=1)))
    sample_every: int = field(default=0, metadata=option("--sample-every", "Write a 4x4 sample grid every N steps "
                                                         "(0: never).", type=click.IntRange(min=0)))
    log_every: int = 50
    schedule: str = "constant"   # learning rate after warm-up: constant | cosine (decays to zero)
    device: str = "cpu"
    precision: str = field(default="auto", metadata=option(
        "--precision", "Autocast: auto is bf16 where it is native (GPUs, CPUs with AVX512-BF16 or AMX), else fp32; "
        "bf16 on a CPU without bf16 units is emulated, slower than fp32.",
        type=click.Choice(PRECISIONS)))

    def validate(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "save_every": self.save_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(name, f"must be positive, got {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must lie in [0, 1), got {self.ema_decay}")
        for name in ("warmup", "sample_every"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.grad_clip > 0:
            raise ConfigError("grad_clip", f"must be positive, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"'{self.precision}' is unknown: use auto, bf16 or fp32")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError("schedule", f"'{self.schedule}' is unknown: use constant or cosine")

    def saves_at(self, step: int) -> bool:
        """Whether a checkpoint is due after `step`: every `save_every` steps and at the end."""
        return step % self.save_every == 0 or step == self.steps

    def lr_factor(self, step: int) -> float:
        """Multiplier of every base learning rate at `step`: linear warm-up, then the schedule."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        if self.schedule == "constant" or step < self.warmup:
            return warm
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
