"""FID, KID and IS of samples, with any extractor; reference features cached by content.

FID uses `sdm.metrics.frechet`; KID and IS use torch-fidelity's own feature-level estimators
(unbiased MMD with the cubic kernel; the split-wise Inception Score). Generated samples are never
cached: only real reference images, under the hash of their pixels.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sdm.diffusion.data import NPZ_READ_ERRORS
from sdm.errors import SDMError
from sdm.metrics.frechet import feature_statistics, frechet_distance

METRICS = ("fid", "kid", "is")


@dataclass
class QualityResult:
    metric: str          # FID, KID, IS, or their -FMNIST proxies
    value: float
    std: float | None
    n: int
    extractor: str
    reference: str | None
    comparable_with_papers: bool

    def label(self) -> str:
        spread = f" ± {self.std:.4g}" if self.std is not None else ""
        against = f"; reference: {self.reference}" if self.reference else ""
        caveat = "" if self.comparable_with_papers else "; not comparable with papers' Inception figures"
        return f"{self.metric} = {self.value:.4g}{spread} (N={self.n}; extractor: {self.extractor}{against}{caveat})"

    def to_dict(self) -> dict:
        return asdict(self)


def kid(features: np.ndarray, reference: np.ndarray, subset_size: int = 1000, subsets: int = 100,
        seed: int = 2020) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets), torch-fidelity's estimator."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features), len(reference))
    out = kid_features_to_metric(torch.from_numpy(features), torch.from_numpy(reference), kid_subsets=subsets,
                                 kid_subset_size=size, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(logits), splits=min(splits, len(logits)))
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def _cache_dir() -> Path:
    return Path(os.environ.get("SDM_METRICS_CACHE", Path.home() / ".cache" / "sdm" / "metrics"))


def reference_features(extractor, images: np.ndarray) -> np.ndarray:
    """Pool features of real reference images, cached under the extractor and the pixels' hash."""
    from sdm.io import atomic_file

    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:20]
    path = _cache_dir() / f"{extractor.name}-{digest}-{len(images)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                return cached["features"].astype(np.float64)
        except NPZ_READ_ERRORS:  # a cache entry cut short: computed again below
            path.unlink()
    features = extractor.features(images)[0]
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.astype(np.float32))
    return features


def fid_reference(extractor, reference: np.ndarray | None,
                  reference_name: str | None = None) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(mu, sigma, what they describe) that a FID of `extractor`'s features is measured against: the
    statistics of `reference` (real images' pool features, `reference_features`), else the Fashion-MNIST
    extractor's shipped statistics; None where there are neither."""
    if reference is not None:
        return (*feature_statistics(reference), reference_name)
    if extractor.suffix == "-FMNIST":
        from sdm.metrics.fmnist_extractor import load_reference

        mu, sigma, info = load_reference()
        return mu, sigma, f"{info['reference']} (N={info['n']}, shipped statistics)"
    return None


def evaluate_quality(images: np.ndarray, extractor, *, metrics=METRICS, reference: np.ndarray | None = None,
                     reference_name: str | None = None, kid_subset_size: int = 1000) -> tuple[list[QualityResult], list[str]]:
    """The requested metrics of uint8 samples, and notes on what could not be computed."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise SDMError(f"unknown metric(s) {', '.join(sorted(unknown))}: choose from {', '.join(METRICS)}")
    pool, logits = extractor.features(images)
    ref = reference_features(extractor, reference) if reference is not None else None
    results, notes = [], []

    def result(metric, value, std, against):
        results.append(QualityResult(metric + extractor.suffix, float(value), std, len(images), extractor.description,
                                     against, extractor.comparable))

    if "fid" in metrics:
        against = fid_reference(extractor, ref, reference_name)
        if against is None:
            notes.append("FID needs --reference (real images)")
        else:
            mu, sigma, label = against
            result("FID", frechet_distance(*feature_statistics(pool), mu, sigma), None, label)
    if "kid" in metrics:
        if ref is None:
            notes.append("KID needs --reference (real images)")
        elif min(len(pool), len(ref)) < 2:
            notes.append("KID needs at least 2 samples")
        else:
            if min(len(pool), len(ref)) < kid_subset_size:
                notes.append(f"KID subsets of {min(len(pool), len(ref))} (fewer than {kid_subset_size} images)")
            mean, std = kid(pool, ref, kid_subset_size)
            result("KID", mean, std, reference_name)
    if "is" in metrics:
        mean, std = inception_score(logits)
        result("IS", mean, std, None)
    return results, notes
