import numpy as np
import pytest
import scipy.linalg

from sdm.errors import SDMError
from sdm.metrics.bootstrap import paired_bootstrap
from sdm.metrics.frechet import feature_statistics, frechet_distance


def scipy_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook computation: general matrix square root of S1 S2, in float64."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_matches_scipy_sqrtm_reference(dim):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim))
    x = rng.normal(size=(500, dim)) @ mix
    y = rng.normal(size=(400, dim)) @ (mix + 0.3 * rng.normal(size=(dim, dim))) + 0.5
    ours = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert ours == pytest.approx(scipy_reference(x, y), rel=1e-6, abs=1e-8)


def test_diagonal_gaussians_by_hand():
    # Diagonal covariances commute: FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
    s1, s2 = np.diag([4.0, 9.0]), np.diag([1.0, 16.0])
    expected = (9 + 4) + (2 - 1) ** 2 + (3 - 4) ** 2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-12)


def test_identical_sets_have_zero_distance():
    x = np.random.default_rng(1).normal(size=(200, 8))
    stats = feature_statistics(x)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-9)


def test_rejects_bad_features():
    with pytest.raises(SDMError, match="NaN"):
        feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(SDMError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_paired_bootstrap_of_a_shift_is_exactly_the_mean_term():
    """a = b + delta: covariances agree on every draw, so each resample's difference is
    |m + delta|^2 - |m|^2 = 2 m.delta + |delta|^2, m the drawn mean of b; its spread is 2 |delta| sigma / sqrt(n)."""
    rng = np.random.default_rng(3)
    n, delta = 400, np.array([0.1, 0.0, 0.0, 0.0])
    b = rng.normal(size=(n, 4))
    a = b + delta
    summary, differences = paired_bootstrap(a, b, np.zeros(4), np.eye(4), resamples=2000)
    m = b.mean(axis=0)
    assert summary.observed == pytest.approx(2 * m @ delta + delta @ delta, abs=1e-9)
    assert differences.mean() == pytest.approx(summary.observed, abs=0.002)
    # 95 % interval of a normal with sd 2 * 0.1 * 1 / 20 = 0.01: width 2 * 1.96 * 0.01 = 0.039
    assert 0.033 < summary.high - summary.low < 0.046
    assert summary.low < delta @ delta < summary.high


def test_paired_bootstrap_identical_and_swapped_models():
    rng = np.random.default_rng(4)
    b = rng.normal(size=(300, 3))
    same, differences = paired_bootstrap(b, b, np.zeros(3), np.eye(3), resamples=50)
    assert np.all(differences == 0) and same.observed == 0 and same.a_better == 0
    worse = b + 1.0
    forward, _ = paired_bootstrap(worse, b, np.zeros(3), np.eye(3), resamples=200, seed=7)
    backward, _ = paired_bootstrap(b, worse, np.zeros(3), np.eye(3), resamples=200, seed=7)
    assert forward.a_better == 0 and backward.a_better == 1
    assert backward.observed == pytest.approx(-forward.observed)
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low))
    assert "lower in 100.0% of 200" in backward.describe("b", "worse")


def test_paired_bootstrap_needs_paired_features():
    with pytest.raises(SDMError, match="seed for seed"):
        paired_bootstrap(np.zeros((10, 3)), np.zeros((9, 3)), np.zeros(3), np.eye(3))
