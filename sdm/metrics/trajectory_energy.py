"""Energy of a spiking model per image, measured along its own sampling trajectories."""

from __future__ import annotations

from sdm.diffusion.sampler import trajectory
from sdm.snn.energy import energy_report
from sdm.snn.modes import scaled_thresholds
from sdm.snn.neurons import spiking_neurons


def spiking_energy(model, scheduler_config: dict, sampler: str, steps: int, threshold_scale: float = 1.0,
                   probes: int = 4) -> dict | None:
    """Energy per denoising step and image, measured along real (guided) sampling trajectories of
    `probes` seeds (at most 8 steps each); None for a model without neurons (an ANN)."""
    if not spiking_neurons(model):
        return None
    with scaled_thresholds(model, threshold_scale):
        x, t, _ = trajectory(model, scheduler_config, range(probes), sampler=sampler, steps=min(steps, 8))
        device = next(model.parameters()).device
        return energy_report(model, x.to(device), t.to(device), denoising_steps=steps)
