"""Spike codes: what the T spiking steps of a window are worth, and how a receiver reads them.

A converted neuron in window mode sees one constant drive per window and answers with a signed
count m of threshold-sized units. The code decides how the T steps spell m:

* **rate**: every spike is worth theta / T; |m| <= T spikes give 2T + 1 levels, and the window value
  is the mean of the steps. Precision costs spikes linearly.
* **weighted** (Kim et al., Neurocomputing 2018; Stoeckl and Maass, Nat. Mach. Intell. 2021): the
  spike of step k is worth theta 2^(T-1-k) / (2^T - 1). Thresholds halve from step to step, so the
  T steps spell |m| in binary, most significant bit first: 2^(T+1) - 1 levels for popcount(|m|)
  spikes. A receiver needs no multiply per synapse: in Horner form its membrane doubles each step and
  adds the step's synaptic current (u <- 2 u + W s_k), one shift per receiving neuron and step, and
  the 1 / (2^T - 1) folds into its weights. Each spike still costs one accumulate per synapse.

A spike tensor holds each spike at its threshold's size in both codes; `window` applies the code's
step weights (the mean, or Horner's doubling), so the same graph serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdm.errors import ConfigError

CODINGS = ("rate", "weighted")


class _PopcountSTE(torch.autograd.Function):
    """The exact number of set bits of integer-valued counts; backward, the slope of its secant to zero.

    A popcount has no useful derivative (it jumps by up to T at powers of two). What fine-tuning
    moves is mostly a scale (thresholds, weights), which moves a count m along the line to zero, where
    no spike is left: the stand-in's slope is that secant's, popcount(m) / m (1 at m = 0, where the
    first level costs one spike). The forward value is the exact popcount, so a loss on it equals the
    measured spike energy; only its gradient is the stand-in's. BENCHMARKS.md 10.4 measures how well
    it predicts measured energy changes (the slope of (1/2) log2(1 + m), the mean popcount's
    envelope, under-predicted them 5.6-fold)."""

    @staticmethod
    def forward(ctx, count: torch.Tensor, bits: int) -> torch.Tensor:
        count = count.detach()
        spikes = popcount(count, bits)
        ctx.save_for_backward(torch.where(count > 0, spikes / count.clamp(min=1), torch.ones_like(count)))
        return spikes

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


def popcount(count: torch.Tensor, bits: int) -> torch.Tensor:
    """Set bits of the non-negative integer-valued `count` (below 2^bits), in `count`'s dtype."""
    whole = count.to(torch.int64)
    total = torch.zeros_like(whole)
    for k in range(bits):
        total += (whole >> k) & 1
    return total.to(count.dtype)


@dataclass(frozen=True)
class SpikeCode:
    """A spike code over `T` steps (see the module docstring)."""

    name: str
    T: int

    def __post_init__(self):
        if self.name not in CODINGS:
            raise ConfigError("coding", f"'{self.name}' is unknown: choose one of {', '.join(CODINGS)}")
        if self.name == "weighted" and not 1 <= self.T <= 24:
            raise ConfigError("T", f"must lie in 1..24 for the weighted code, whose 2^T - 1 levels per side must stay "
                              f"exact in float32 (T = 8 already carries 255), got {self.T}; for more steps use "
                              "--coding rate")

    @property
    def levels(self) -> int:
        """Non-zero levels per side: the largest spike count m a window can carry."""
        return self.T if self.name == "rate" else 2 ** self.T - 1

    def step_weights(self) -> list[int]:
        """What one spike of each step is worth, in units of theta / levels."""
        return [1] * self.T if self.name == "rate" else [2 ** (self.T - 1 - k) for k in range(self.T)]

    def window(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The window value of a [T, B, ...] step sequence: its mean (rate), or its weighted sum
        computed as a receiver does, by doubling and adding (Horner), over 2^T - 1 (weighted)."""
        if self.name == "rate":
            return x_seq.mean(0)
        total = x_seq[0]
        for x in x_seq[1:]:
            total = total * 2 + x
        return total / self.levels

    def spikes(self, count: torch.Tensor) -> torch.Tensor:
        """The spikes that carry integer counts |m|: m itself (rate) or its popcount (weighted).
        Differentiable: the weighted code passes the popcount's envelope slope (`_PopcountSTE`)."""
        return count if self.name == "rate" else _PopcountSTE.apply(count, self.T)

    @property
    def doublings_per_value(self) -> int:
        """Shifts a receiving neuron makes per window (Horner form), none in the rate code."""
        return 0 if self.name == "rate" else self.T - 1

    def describe(self) -> str:
        return (f"rate code, T = {self.T} ({2 * self.levels + 1} levels)" if self.name == "rate" else
                f"weighted code, T = {self.T} ({2 * self.levels + 1} levels, spikes worth 2^(T-1-k))")
