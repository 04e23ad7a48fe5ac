"""Min-SNR-gamma weights of eps errors (Hang et al. 2023).

What a sample shows is decided at high noise, while eps errors are largest where the signal dominates
(about 250x larger at t < 100 on the development models, BENCHMARKS.md 11.6). Weighting each error by
min(SNR(t), gamma) / SNR(t) keeps the first from drowning in the second: fine-tuning weighs its loss so,
and the site choice under an energy budget its error.
"""

from __future__ import annotations

import torch

from sdm.diffusion.sampler import make_scheduler

MIN_SNR_GAMMA = 5.0  # chosen on the development set for fine-tuning (BENCHMARKS.md 11.6)


def min_snr_weights(t: torch.Tensor, scheduler_config: dict, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """min(SNR(t), gamma) / SNR(t) for each t, the Min-SNR-gamma weight of an eps error (all 1 for a gamma
    of 0): 1 at high noise, down to gamma / SNR where the signal dominates."""
    if not gamma:
        return torch.ones(len(t))
    abar = make_scheduler("ddpm", scheduler_config).alphas_cumprod.double()[t.long().cpu()]
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / snr).float()
