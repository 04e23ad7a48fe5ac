"""Threshold rules: from an activation's statistics to a neuron's thresholds.

A neuron with threshold theta whose window carries L levels (L = T in the rate code, 2^T - 1 in the
weighted code: `sdm.snn.coding`), holding a constant drive a, emits theta/L * clip(floor(a*L/theta +
v_init), 0, L): an L-level quantiser. The rules pick theta (and theta_n for the negative part of
signed neurons):

* max:        the largest value seen (no clipping, coarsest levels);
* percentile: the p-th percentile (clips the rare tail);
* mse:        the theta that minimises the quantiser's mean squared error on the observed values.
"""

from __future__ import annotations

import numpy as np

from sdm.errors import ConfigError, SDMError

RULES = ("max", "percentile", "mse")
_CANDIDATES = np.linspace(0.01, 1.0, 400)


def quantise(values: np.ndarray, theta: np.ndarray | float, levels: int, v_init: float) -> np.ndarray:
    """What a non-negative spiking neuron with `levels` levels makes of constant inputs `values` (>= 0)."""
    theta = np.asarray(theta, dtype=np.float64)
    count = np.clip(np.floor(values * levels / theta + v_init), 0, levels)
    return count * theta / levels


def _centres(hist: list[int], extent: float) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(hist, dtype=np.float64)
    width = extent / max(len(counts), 1)
    return (np.arange(len(counts)) + 0.5) * width, counts


def _mse_threshold(hist: list[int], extent: float, levels: int, v_init: float) -> float:
    centres, counts = _centres(hist, extent)
    if extent <= 0 or counts.sum() == 0:
        return 0.0
    candidates = _CANDIDATES * extent
    errors = ((centres[None, :] - quantise(centres[None, :], candidates[:, None], levels, v_init)) ** 2 * counts).sum(1)
    return float(candidates[int(np.argmin(errors))])


def _upper_quantile(hist: list[int], extent: float, below: float, total: float, q: float) -> float:
    """The value where the CDF reaches q, given `below` values lie under this histogram's range."""
    counts = np.asarray(hist, dtype=np.float64)
    if extent <= 0 or counts.sum() == 0:
        return 0.0
    cdf = (below + np.cumsum(counts)) / total
    i = int(np.searchsorted(cdf, q))
    if i >= len(counts):
        return extent
    prev = (below + (counts[:i].sum())) / total
    frac = 0.0 if counts[i] == 0 else (q - prev) / (counts[i] / total)
    return float((i + np.clip(frac, 0.0, 1.0)) * extent / len(counts))


def _from_histograms(h: dict, rule: str, levels: int, v_init: float, percentile: float) -> tuple[float, float]:
    pos_hist, neg_hist = h["pos_hist"], h["neg_hist"]
    pos_range, neg_range = h["pos_range"], h["neg_range"]
    n_pos, n_neg = float(sum(pos_hist)), float(sum(neg_hist))
    total = n_pos + n_neg + h["zeros"]
    if rule == "max":
        return pos_range, neg_range
    if rule == "percentile":
        q = percentile / 100.0
        theta = _upper_quantile(pos_hist, pos_range, total - n_pos, total, q)
        theta_n = _upper_quantile(neg_hist, neg_range, total - n_neg, total, q) if n_neg else 0.0
        return theta, theta_n
    return _mse_threshold(pos_hist, pos_range, levels, v_init), _mse_threshold(neg_hist, neg_range, levels, v_init)


def site_thresholds(stats: dict, rule: str, *, levels: int, v_init: float, percentile: float, per_channel: bool,
                    signed: bool) -> dict:
    """{'threshold': theta, 'neg_threshold': theta_n} for one site (lists when per channel). The settings
    come from a checked `ConversionConfig` (`CalibrationStats.thresholds`)."""
    if stats.get("count", 0) == 0:
        raise SDMError(f"activation site '{stats.get('name', '?')}' saw no values during calibration")
    if per_channel:
        channels = stats.get("channels")
        if channels is None:
            raise ConfigError("per_channel", "needs per-channel statistics: calibrate with per-channel observers")
        pairs = []
        for c in range(len(channels["max"])):
            h = {"pos_hist": channels["pos_hist"][c], "neg_hist": channels["neg_hist"][c],
                 "pos_range": max(channels["max"][c], 0.0), "neg_range": max(-channels["min"][c], 0.0)}
            h["zeros"] = 0
            pairs.append(_from_histograms(h, rule, levels, v_init, percentile))
        theta, theta_n = (list(x) for x in zip(*pairs, strict=True))
        fallback = _from_histograms(stats, rule, levels, v_init, percentile)[0] or 1.0
        theta = [t if t > 0 else fallback for t in theta]  # a channel that never fired still needs a threshold
        return {"threshold": theta, "neg_threshold": theta_n if signed else [0.0] * len(theta_n)}
    theta, theta_n = _from_histograms(stats, rule, levels, v_init, percentile)
    if theta <= 0:
        theta = 1.0  # the site never went positive: any threshold gives the same (silent) neuron
    return {"threshold": theta, "neg_threshold": theta_n if signed else 0.0}
