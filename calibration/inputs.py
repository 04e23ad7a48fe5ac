"""Calibration and probe inputs: pairs (x_t, t) that cover the whole range of diffusion times.

* trajectory (data-free): the model's own DDIM trajectories from fixed seeds;
* data: real images noised to uniformly drawn t.

Probe pairs, on which conversions are judged, come from trajectories of a seed range that
calibration never uses: a set spread evenly over t, plus extra pairs at t < 100, where the noise to
predict is smallest and conversion errors show first.
"""

from __future__ import annotations

import math

import torch

from sdm.errors import SDMError
from sdm.images import to_model_range
from sdm.sampler import trajectory

SOURCES = ("trajectory", "data")
PROBE_SEED = 1 << 20
PROBE_TRAJECTORIES = 8
TRAJECTORIES = 16


def calibration_pairs(
    model: torch.nn.Module, scheduler_config: dict, n: int, *, source: str = "trajectory",
    data: torch.Tensor | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` calibration pairs (x_t, t) on the CPU."""
    if n < 1:
        raise SDMError(f"--calib-samples must be at least 1, got {n}")
    if source == "trajectory":
        count = max(1, min(TRAJECTORIES, n // 32))  # at least 32 steps per trajectory: dense in t
        if seed + count > PROBE_SEED:
            raise SDMError(f"--seed must be below {PROBE_SEED - count}: higher seeds are reserved for probes")
        steps = max(2, math.ceil(n / count))
        x, t, _ = trajectory(model, scheduler_config, range(seed, seed + count), steps=steps)
        keep = torch.linspace(0, len(t) - 1, n).round().long()
        return x[keep], t[keep]
    if source == "data":
        if data is None:
            raise SDMError("--calib-source data needs --data PATH (a .npz, an image folder or a data set name)")
        return noised_pairs(data, scheduler_config, n, seed)
    raise SDMError(f"unknown calibration source '{source}': choose one of {', '.join(SOURCES)}")


def noised_pairs(images: torch.Tensor, scheduler_config: dict, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real uint8 NCHW images noised by the forward process at t ~ U{0..T-1}."""
    from diffusers import DDPMScheduler

    abar = DDPMScheduler.from_config(scheduler_config).alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(images), (n,), generator=g)
    t = torch.randint(len(abar), (n,), generator=g)
    x0 = to_model_range(images[idx])
    noise = torch.randn(x0.shape, generator=g)
    a = abar[t].view(-1, 1, 1, 1).float()
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, t


def probe_pairs(
    model: torch.nn.Module, scheduler_config: dict, n: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, spread): `n` pairs spread evenly over t (`spread` True) and n/2 more at t < 100."""
    x, t, _ = trajectory(model, scheduler_config, range(PROBE_SEED, PROBE_SEED + PROBE_TRAJECTORIES), steps=50)
    order = torch.argsort(-t, stable=True)
    spread = order[torch.linspace(0, len(order) - 1, n).round().long()]
    low = torch.tensor([i for i in (t < 100).nonzero().flatten().tolist() if i not in set(spread.tolist())])
    low = low[torch.linspace(0, len(low) - 1, min(n // 2, len(low))).round().long()] if len(low) else low
    keep = torch.cat([spread, low.long()])
    return x[keep], t[keep], torch.arange(len(keep)) < len(spread)


def spread_subset(probes: tuple[torch.Tensor, torch.Tensor, torch.Tensor], count: int = 8):
    """About `count` of the probe pairs spread over t (x_t, t): the inputs energy reports are measured on."""
    x, t, spread = probes
    every = max(1, int(spread.sum()) // count)
    return x[spread][::every], t[spread][::every]
