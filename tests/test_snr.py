"""Min-SNR-gamma weights against the linear schedule cumulated by hand."""

import pytest
import torch

from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.snr import min_snr_weights


def test_min_snr_weights_by_hand():
    """min(SNR, gamma) / SNR from the linear schedule's alpha-bar, cumulated here by hand."""
    abar, product = [], 1.0
    for i in range(1000):
        product *= 1 - (1e-4 + (0.02 - 1e-4) * i / 999)
        abar.append(product)
    t = torch.tensor([0, 40, 150, 700])
    expected = [min(abar[i] / (1 - abar[i]), 2.0) / (abar[i] / (1 - abar[i])) for i in t.tolist()]
    # rel 1e-3: diffusers builds the betas in float32, which moves 1 - alpha-bar at t = 0 by 2e-4 of itself
    assert min_snr_weights(t, dict(DDPM_LINEAR_SCHEDULE), 2.0).tolist() == pytest.approx(expected, rel=1e-3)
    assert expected[-1] == 1.0 and expected[0] < 1e-3  # high noise keeps its weight, the cleanest step loses it
    assert min_snr_weights(t, dict(DDPM_LINEAR_SCHEDULE), 0.0).tolist() == [1.0] * 4
