"""Running a network over T spiking steps with T folded into the batch.

Stateless ops see one [T*B, ...] batch; neurons unfold it to [T, B, ...]. Ops that are neither
spiking nor linear (GroupNorm, softmax attention) are fed running means: at step t they see the mean
of their inputs over steps 1..t and emit what makes their own running output mean equal to the op
applied to that input mean. Their T-step average is then exactly the op on the T-step average
input, and every step still depends only on steps up to t.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sdm.neurons import SpikingNeuron


def fold(x_seq: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T*B, ...]"""
    return x_seq.flatten(0, 1)


def unfold(x: torch.Tensor, T: int) -> torch.Tensor:
    """[T*B, ...] -> [T, B, ...]"""
    return x.reshape(T, x.shape[0] // T, *x.shape[1:])


def running_mean(x_seq: torch.Tensor) -> torch.Tensor:
    """m_t = mean(x_1..x_t) along dim 0."""
    steps = torch.arange(1, x_seq.shape[0] + 1, device=x_seq.device, dtype=x_seq.dtype)
    return x_seq.cumsum(0) / steps.view(-1, *([1] * (x_seq.dim() - 1)))


def increments_of_running_mean(y_seq: torch.Tensor) -> torch.Tensor:
    """z_t = t y_t - (t-1) y_{t-1}, so that mean(z_1..z_t) = y_t."""
    steps = torch.arange(1, y_seq.shape[0] + 1, device=y_seq.device, dtype=y_seq.dtype)
    total = y_seq * steps.view(-1, *([1] * (y_seq.dim() - 1)))
    return torch.cat([total[:1], total[1:] - total[:-1]])


class RepeatTime(nn.Module):
    """A static (per-sample) tensor presented at every step: [B, ...] -> [T*B, ...]."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.T, *([1] * (x.dim() - 1)))


class MeanTime(nn.Module):
    """Decode by averaging over steps: [T*B, ...] -> [B, ...]."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold(x, self.T).mean(0)


class FoldedNeuron(nn.Module):
    """A multi-step neuron placed in a folded graph."""

    def __init__(self, neuron: SpikingNeuron, T: int):
        super().__init__()
        self.neuron, self.T = neuron, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fold(self.neuron(unfold(x, self.T)))


class TemporalMean(nn.Module):
    """Running-mean feeding of a non-spiking, non-linear op `fn` (see the module docstring).

    `sequence_args` are the positions of the arguments that vary over steps; the others (weights,
    sizes) pass through unchanged.
    """

    def __init__(self, fn: Callable, sequence_args: tuple[int, ...], T: int, name: str = ""):
        super().__init__()
        self.fn, self.sequence_args, self.T, self.name = fn, tuple(sequence_args), T, name

    def extra_repr(self) -> str:
        return f"{self.name or getattr(self.fn, '__name__', self.fn)}, T={self.T}"

    def forward(self, *args, **kwargs):
        args = list(args)
        for i in self.sequence_args:
            args[i] = fold(running_mean(unfold(args[i], self.T)))
        return fold(increments_of_running_mean(unfold(self.fn(*args, **kwargs), self.T)))
