"""The one sampler: ANN, converted and directly trained models all denoise through this loop.

Any eps-predicting model with `UNet2DModel`'s call signature works; diffusers schedulers do the
update. Image i is drawn from its own generator seeded with `seed + i`, so an image depends on its
seed only, not on the batch size or on how many processes shared the work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from sdm.diffusion.images import to_uint8
from sdm.errors import ConfigError, SDMError
from sdm.settings import option
from sdm.snn.modes import scaled_thresholds

SAMPLERS = ("ddpm", "ddim", "dpm")


@dataclass(frozen=True)
class SamplingSettings:
    """How images are drawn: the sampler's knobs, shared by every command that samples."""

    sampler: str = field(default="ddim", metadata=option("--sampler", type=click.Choice(SAMPLERS)))
    steps: int = field(default=50, metadata=option("--steps", "Denoising steps.", type=click.IntRange(min=1)))
    seed: int = field(default=0, metadata=option("--seed", "Image i uses seed SEED + i.", type=click.IntRange(min=0)))
    batch_size: int = field(default=64, metadata=option("--batch-size", type=click.IntRange(min=1)))

    def kwargs(self) -> dict:
        """`sample`'s keyword arguments."""
        return asdict(self)


SAMPLING = SamplingSettings()  # the defaults, for signatures


def make_scheduler(name: str, config: dict):
    """A fresh diffusers scheduler of kind `name` for the training schedule in `config`."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "ddpm":
        return DDPMScheduler.from_config(config)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise SDMError(f"unknown sampler '{name}': choose one of {', '.join(SAMPLERS)}")


def model_signature(model: torch.nn.Module) -> tuple[int, int, torch.dtype, torch.device]:
    """(image size, channels, dtype, device) from the model's diffusers-style config."""
    config = getattr(model, "config", None)
    try:
        size, channels = int(config.sample_size), int(config.in_channels)
    except (AttributeError, TypeError, ValueError):
        raise SDMError(
            f"{type(model).__name__} has no config.sample_size / config.in_channels; "
            "the sampler needs a diffusers-style model"
        ) from None
    param = next(model.parameters())
    return size, channels, param.dtype, param.device


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    scheduler_config: dict,
    num_samples: int,
    *,
    sampler: str = SAMPLING.sampler,
    steps: int = SAMPLING.steps,
    seed: int = SAMPLING.seed,
    batch_size: int = SAMPLING.batch_size,
    threshold_scale: float = 1.0,
    progress: bool = True,
) -> np.ndarray:
    """Draw `num_samples` images (seeds `seed`..`seed + num_samples - 1`) as uint8 N x H x W x C.

    `threshold_scale` is threshold guidance for spiking models (see `sdm.snn.modes.scaled_thresholds`).
    """
    if num_samples < 1:
        raise ConfigError("num_samples", f"must be at least 1, got {num_samples}")
    if steps < 1:
        raise ConfigError("steps", f"must be at least 1, got {steps}")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    make_scheduler(sampler, scheduler_config)  # validate the name before any work
    size, channels, dtype, device = model_signature(model)
    n_batches = math.ceil(num_samples / batch_size)
    out = []
    with scaled_thresholds(model, threshold_scale), \
            tqdm(total=n_batches * steps, desc=f"sampling {sampler}-{steps}", disable=not progress, unit="step") as bar:
        for b in range(n_batches):
            seeds = range(seed + b * batch_size, seed + min((b + 1) * batch_size, num_samples))
            out.append(_sample_batch(model, scheduler_config, sampler, steps, seeds, (channels, size, size), dtype, device, bar))
    return np.concatenate(out)


def _sample_batch(model, scheduler_config, sampler, steps, seeds, shape, dtype, device, bar, on_step=None) -> np.ndarray:
    """Denoise one batch; `on_step(x_in, t, eps)` sees every model input and output (trajectory recording)."""
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = make_scheduler(sampler, scheduler_config)
    if steps > scheduler.config.num_train_timesteps:
        raise ConfigError("steps", f"({steps}) exceeds the {scheduler.config.num_train_timesteps} training timesteps")
    scheduler.set_timesteps(steps)
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    x = randn_tensor((len(generators), *shape), generator=generators, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = model(x_in, t.expand(len(x)).to(device), return_dict=False)[0]
        if not torch.isfinite(eps).all():
            raise SDMError(
                f"the model produced NaN or inf at timestep {int(t)}; check the checkpoint (and any thresholds)"
            )
        if on_step is not None:
            on_step(x_in, t, eps)
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
        if bar is not None:
            bar.update(1)
    return to_uint8(x)


@torch.no_grad()
def trajectory(
    model: torch.nn.Module, scheduler_config: dict, seeds: range, *, sampler: str = "ddim", steps: int = 16,
    bar=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model inputs (x_t, t) met while sampling `seeds`, and the model's eps at each: len(seeds) *
    steps triples spanning all t. The eps comes free with the path (distillation targets need no second
    pass). `bar`, a tqdm-like, advances once per denoising step."""
    make_scheduler(sampler, scheduler_config)
    size, channels, dtype, device = model_signature(model)
    xs, ts, eps = [], [], []

    def record(x_in, t, e):
        xs.append(x_in.detach().cpu())
        ts.append(t.expand(len(x_in)).cpu())
        eps.append(e.detach().float().cpu())

    _sample_batch(model, scheduler_config, sampler, steps, seeds, (channels, size, size), dtype, device, bar, record)
    return torch.cat(xs), torch.cat(ts), torch.cat(eps)
