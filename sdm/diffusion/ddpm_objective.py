"""The default objective of the shared training loop: DDPM's noise-prediction loss on a data set, its
batches drawn in one seeded permutation per epoch, so that a resumed run sees the batches the
uninterrupted one would have."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sdm.diffusion.data import load_dataset
from sdm.diffusion.images import to_model_range
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.sampler import make_scheduler
from sdm.diffusion.train_settings import TrainSettings


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator("cpu").manual_seed(seed * 7919 + epoch))


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of batch `step`: consecutive slices of one seeded permutation per epoch."""
    parts, position, taken = [], step * batch_size, 0
    while taken < batch_size:
        epoch, offset = divmod(position, n)
        take = min(batch_size - taken, n - offset)
        parts.append(_epoch_permutation(n, seed, epoch)[offset : offset + take])
        position, taken = position + take, taken + take
    return torch.cat(parts)


def diffusion_loss(model, images: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator,
                   hflip: bool) -> torch.Tensor:
    """The DDPM epsilon objective on one batch of [-1, 1] images."""
    n = images.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (n,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    device = images.device
    t, noise = t.to(device), noise.to(device)
    a = alphas_cumprod.to(device)[t].view(-1, 1, 1, 1)
    pred = model(a.sqrt() * images + (1 - a).sqrt() * noise, t, return_dict=False)[0]
    return F.mse_loss(pred.float(), noise)


def ddpm_objective(settings: TrainSettings, model: nn.Module, accelerator) -> Callable:
    """The default objective: DDPM's noise-prediction loss on `settings.data`, each process its share of
    the step's batch."""
    size, channels = int(model.config.sample_size), int(model.config.in_channels)
    data = load_dataset(settings.data, size, channels, fit=settings.fit)
    alphas = make_scheduler("ddpm", dict(DDPM_LINEAR_SCHEDULE)).alphas_cumprod.float()
    world, rank = accelerator.num_processes, accelerator.process_index

    def objective(model, step, generator):
        indices = batch_indices(step, settings.batch_size, len(data), settings.seed)[rank::world]
        images = to_model_range(data[indices].to(accelerator.device))
        return diffusion_loss(model, images, alphas, generator, settings.hflip), {}

    return objective
