"""How sure a FID difference between two models is, from the samples already drawn.

Two models sampled from the same seeds share their initial noise, so their samples are paired. A paired
bootstrap draws the seeds with replacement, scores both models on the same draw and keeps the
difference: its spread is what another seed set of the same size would likely show, at no sampling cost.
Resampling with replacement repeats images, which biases each FID upward by about the same amount for
both models; the difference is what the bootstrap is for, not the FID itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdm.errors import SDMError
from sdm.metrics.frechet import feature_statistics, frechet_distance


@dataclass
class PairedDifference:
    observed: float          # FID(a) - FID(b) on the seeds as drawn
    low: float               # the bootstrap's 2.5 % quantile of the difference
    high: float              # its 97.5 % quantile
    a_better: float          # fraction of resamples where a's FID is lower
    resamples: int

    def describe(self, a: str, b: str) -> str:
        return (f"{a} - {b}: {self.observed:+.3f} FID (95 % interval {self.low:+.3f} to {self.high:+.3f}; "
                f"{a} lower in {self.a_better:.1%} of {self.resamples} paired resamples of the seeds)")


def paired_bootstrap(features_a: np.ndarray, features_b: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, *,
                     resamples: int = 1000, seed: int = 0) -> tuple[PairedDifference, np.ndarray]:
    """The FID difference a - b against fixed reference statistics, and every resample's difference."""
    if features_a.shape != features_b.shape:
        raise SDMError(f"paired features must match seed for seed: {features_a.shape} vs {features_b.shape}")
    if resamples < 2:
        raise SDMError("a bootstrap needs at least 2 resamples")

    def fid(features):
        return frechet_distance(*feature_statistics(features), mu_ref, sigma_ref)

    rng = np.random.default_rng(seed)
    n = len(features_a)
    differences = np.empty(resamples)
    for i in range(resamples):
        draw = rng.integers(0, n, n)
        differences[i] = fid(features_a[draw]) - fid(features_b[draw])
    low, high = np.quantile(differences, [0.025, 0.975])
    summary = PairedDifference(fid(features_a) - fid(features_b), float(low), float(high),
                               float((differences < 0).mean()), resamples)
    return summary, differences
