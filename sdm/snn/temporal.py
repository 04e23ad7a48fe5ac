"""Running a network over T spiking steps with T folded into the batch.

Stateless ops see one [T*B, ...] batch; neurons unfold it to [T, B, ...]. Ops that are neither
spiking nor linear (GroupNorm, softmax attention) are analog and handled in one of two ways, both of
which make their T-step average exactly the op applied to the T-step average input:

* 'running' (causal): at step t the op sees the mean of its inputs over steps 1..t and emits what
  makes its own running output mean equal to the op of that mean; step t depends on steps <= t only.
* 'window' (layer-synchronous): the op waits for all T steps, applies itself once to their window
  value and presents the result at every step; the neurons after it then hold a constant drive, which
  makes them exact rounding quantisers to their code's levels. The window value is the mean in the
  rate code and the weighted sum in the weighted code (`sdm.snn.coding`), which is window mode only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sdm.snn.coding import SpikeCode
from sdm.snn.neurons import SpikingNeuron


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


class Folded(nn.Module):
    """A module of a graph run with T steps folded into the batch, or once in the graph's rate form.

    The rate form: in window mode every analog op and every neuron sees the window value of its input
    (`SpikeCode.window`: the mean over the T steps, or the weighted code's weighted sum), and every op
    between them is linear, so the network's output (the window value) equals the same graph run once,
    at batch B, with each neuron replaced by its closed-form rounding to the code's levels. Spike counts
    are kept. It runs T times faster; the tests compare it with the step-by-step simulation.
    `ConvertedUNet.set_executor` and `executing` switch it.
    """

    def __init__(self, code: SpikeCode):
        super().__init__()
        self.code = code
        self.rate = False

    @property
    def T(self) -> int:
        return self.code.T

    @property
    def folded(self) -> int:
        return 1 if self.rate else self.T

    def window_value(self, x: torch.Tensor) -> torch.Tensor:
        """[T*B, ...] -> [B, ...]: what the window's steps are worth together (the rate form: x itself, as
        the mean of its one step, a fresh contiguous tensor, so the layers after it round as they did)."""
        return unfold(x, 1).mean(0) if self.rate else self.code.window(unfold(x, self.T))

    def present(self, y: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [T*B, ...]: `y` at every step (the rate form: y itself)."""
        return y if self.rate else y.unsqueeze(0).expand(self.T, *y.shape).flatten(0, 1)

    def analog(self, fn: Callable, args: list, sequence_args: tuple[int, ...], mode: str, kwargs: dict):
        """Apply a non-spiking op to folded step sequences in `mode` (see the module docstring)."""
        args = list(args)
        if self.rate:  # the arguments are their own window values
            return fn(*args, **kwargs)
        if mode == "window":
            for i in sequence_args:
                args[i] = self.window_value(args[i])
            return self.present(fn(*args, **kwargs))
        if mode == "running":
            for i in sequence_args:
                args[i] = fold(running_mean(unfold(args[i], self.T)))
            return fold(increments_of_running_mean(unfold(fn(*args, **kwargs), self.T)))
        raise ValueError(f"unknown analog mode {mode!r}; use one of {ANALOG_MODES}")


class RepeatTime(Folded):
    """A static (per-sample) tensor presented at every step: [B, ...] -> [T*B, ...]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.folded == 1 else x.repeat(self.folded, *([1] * (x.dim() - 1)))


class WindowValue(Folded):
    """Decode by the code's window value: [T*B, ...] -> [B, ...]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.window_value(x)


ANALOG_MODES = ("window", "running")


class TemporalMean(Folded):
    """A non-spiking, non-linear op `fn` over T steps, in 'window' or 'running' mode.

    `sequence_args` are the positions of the arguments that vary over steps; the others (weights,
    sizes) pass through unchanged.
    """

    def __init__(self, fn: Callable, sequence_args: tuple[int, ...], code: SpikeCode, mode: str, name: str = ""):
        super().__init__(code)
        self.fn, self.sequence_args, self.mode, self.name = fn, tuple(sequence_args), mode, name

    def extra_repr(self) -> str:
        return f"{self.name or getattr(self.fn, '__name__', self.fn)}, T={self.T}, mode={self.mode}"

    def forward(self, *args, **kwargs):
        return self.analog(self.fn, args, self.sequence_args, self.mode, kwargs)


TRANSFERS = ("function", "neuron", "analog")
SMOOTH_TRANSFERS = ("function", "neuron")  # what may stand in for a smooth activation
# What a network's output layer reads: real values (the last activation kept analog) or the last spikes.
READOUTS = ("analog", "spikes")


class SpikingActivation(Folded):
    """An activation call site of a converted network, on folded [T*B, ...] tensors.

    `transfer` says what stands in for the ANN's activation `function`:

    * 'function': the function is evaluated on the mean input, as the analog ops are, and the neuron
      encodes the result in spikes (signed where it goes negative). Smooth activations (SiLU, GELU)
      are not rates of any integrate-and-fire dynamics, so this is exact up to the T-level rounding.
    * 'neuron': the neuron's own transfer replaces the function (an IF neuron's rate is a clipped,
      T-level ReLU of its mean input; signed, a clip on both sides). Exact for ReLU; for smooth
      activations no analog function is left, and fine-tuning recovers the difference.
    * 'analog': no spikes: the function of the mean input, an analog value (the readout, or a site
      a user keeps analog). The neuron and its thresholds are kept so the site can spike again.
    """

    def __init__(self, neuron: SpikingNeuron, code: SpikeCode, function: Callable, mode: str, transfer: str):
        super().__init__(code)
        if transfer not in TRANSFERS:
            raise ValueError(f"unknown transfer {transfer!r}; use one of {TRANSFERS}")
        self.neuron, self.function, self.mode, self.transfer = neuron, function, mode, transfer

    @property
    def spiking(self) -> bool:
        return self.transfer != "analog"

    def extra_repr(self) -> str:
        name = getattr(self.function, "__name__", None) or getattr(getattr(self.function, "func", None), "__name__", "?")
        return f"{name}, transfer={self.transfer}, T={self.T}, mode={self.mode}"

    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x) if self.transfer == "function" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transfer == "analog":
            return self.analog(self.function, [x], (0,), self.mode, {})
        if self.rate:  # x is already the window value, [B, ...]
            return self.neuron.constant_rate(self._drive(x), self.code)
        if self.mode == "window":  # the neuron holds one drive, the window value, for the whole window
            return fold(self.neuron.constant_response(self._drive(self.window_value(x)), self.code))
        if self.transfer == "function":
            x = self.analog(self.function, [x], (0,), self.mode, {})
        return fold(self.neuron(unfold(x, self.T)))
