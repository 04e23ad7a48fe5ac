"""Activation observers: what calibration learns about one activation call site.

An observer keeps the exact range and a random subsample of the values it sees (per channel too,
on request). `summary()` turns them into compact, JSON-able statistics: the range and histograms
of the positive and negative parts, from which every threshold rule is computed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

POS_BINS, NEG_BINS, CHANNEL_BINS = 2048, 256, 64


class ActivationObserver(nn.Module):
    """Identity that records the activation values passing through it (channels on dim 1)."""

    def __init__(self, name: str, op: str, per_channel: bool = False, per_batch: int = 32768,
                 per_channel_batch: int = 512, seed: int = 0):
        super().__init__()
        self.name, self.op, self.per_channel = name, op, per_channel
        self.per_batch, self.per_channel_batch = per_batch, per_channel_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.count = 0
        self.min, self.max = float("inf"), float("-inf")
        self.samples: list[torch.Tensor] = []
        self.channel_samples: list[torch.Tensor] = []
        self.channel_min: torch.Tensor | None = None
        self.channel_max: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().float()
        flat = values.flatten()
        self.count += flat.numel()
        self.min, self.max = min(self.min, flat.min().item()), max(self.max, flat.max().item())
        take = min(flat.numel(), self.per_batch)
        idx = torch.randint(flat.numel(), (take,), generator=self.generator).to(flat.device)
        self.samples.append(flat[idx].cpu())
        if self.per_channel:
            per_channel = values.transpose(0, 1).reshape(values.shape[1], -1)
            cmin, cmax = per_channel.amin(1).cpu(), per_channel.amax(1).cpu()
            self.channel_min = cmin if self.channel_min is None else torch.minimum(self.channel_min, cmin)
            self.channel_max = cmax if self.channel_max is None else torch.maximum(self.channel_max, cmax)
            take = min(per_channel.shape[1], self.per_channel_batch)
            idx = torch.randint(per_channel.shape[1], (take,), generator=self.generator).to(per_channel.device)
            self.channel_samples.append(per_channel[:, idx].cpu())
        return x

    def summary(self) -> dict:
        if self.count == 0:
            return {"op": self.op, "count": 0}
        sample = torch.cat(self.samples).double().numpy()
        stats = {
            "op": self.op, "count": self.count, "min": self.min, "max": self.max,
            **_histograms(sample, self.min, self.max, POS_BINS, NEG_BINS),
        }
        if self.per_channel:
            per_channel = torch.cat(self.channel_samples, dim=1).double().numpy()
            channel_hists = [_histograms(row, lo, hi, CHANNEL_BINS, CHANNEL_BINS)
                             for row, lo, hi in zip(per_channel, self.channel_min.tolist(), self.channel_max.tolist(), strict=True)]
            stats["channels"] = {
                "min": self.channel_min.tolist(), "max": self.channel_max.tolist(),
                "pos_hist": [h["pos_hist"] for h in channel_hists], "neg_hist": [h["neg_hist"] for h in channel_hists],
            }
        return stats


def _histograms(sample: np.ndarray, lo: float, hi: float, pos_bins: int, neg_bins: int) -> dict:
    """Counts of the positive part over [0, max] and of the magnitude of the negative part over [0, -min]."""
    pos_range, neg_range = max(hi, 0.0), max(-lo, 0.0)
    pos = np.histogram(sample[sample > 0], bins=pos_bins, range=(0.0, pos_range or 1.0))[0]
    neg = np.histogram(-sample[sample < 0], bins=neg_bins, range=(0.0, neg_range or 1.0))[0]
    return {"zeros": int((sample == 0).sum()), "pos_range": pos_range, "pos_hist": pos.tolist(),
            "neg_range": neg_range, "neg_hist": neg.tolist()}
