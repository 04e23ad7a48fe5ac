"""Multi-step spiking neurons (SpikingJelly's convention: inputs shaped [T, B, ...]).

One set of classes serves conversion (thresholds from calibration, signed spikes, half-threshold
initial potential) and direct training (binary spikes, surrogate gradients). State persists across
calls, as in SpikingJelly, until `reset()`; models call `reset_neurons` before every forward pass.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from sdm.errors import SDMError


class _Heaviside(torch.autograd.Function):
    """Step function forward, a smooth surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float, kind: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha, ctx.kind = alpha, kind
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.kind](x, ctx.alpha), None, None


def _atan(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def _sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1 - s)


def _rectangle(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x.abs() < 0.5 / alpha).to(x.dtype) * alpha


SURROGATES = {"atan": _atan, "sigmoid": _sigmoid, "rectangle": _rectangle}


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity backward (the straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


def heaviside(x: torch.Tensor, surrogate: str = "atan", alpha: float = 2.0) -> torch.Tensor:
    return _Heaviside.apply(x, alpha, surrogate)


class SpikingNeuron(nn.Module):
    """Integrate, fire, reset; the output is the spike times the threshold (signed for negative spikes).

    Args:
        threshold: firing threshold theta, a scalar or one value per channel (dim 2 of [T, B, C, ...]).
        neg_threshold: the size of spikes below zero, for activations with a negative range (SiLU, GELU).
        signed: allow downward spikes. A signed neuron keeps its net spike count: while it is positive,
            a downward spike undoes an earlier +theta (so an early spike that the later input does not
            confirm is taken back); at or below zero it fires -theta_n (when theta_n > 0). Its output
            then tracks the running input sum from both sides, as a rounding quantiser would.
        v_init: initial membrane potential as a fraction of the threshold. 0.5 turns the T-step spike
            count into rounding instead of flooring, removing the expected quantisation bias. It is
            applied as the equivalent threshold offset, so negative spikes round symmetrically.
        reset: 'subtract' (keeps the residue; what conversion wants) or 'value' (set to `reset_value`).
        decay: membrane leak per step; 1.0 is integrate-and-fire, below 1 is leaky.
        surrogate, alpha: the surrogate derivative used by backpropagation through time.
    """

    def __init__(
        self,
        threshold: float | torch.Tensor = 1.0,
        *,
        neg_threshold: float | torch.Tensor = 0.0,
        signed: bool = False,
        v_init: float = 0.0,
        reset: str = "subtract",
        reset_value: float = 0.0,
        decay: float = 1.0,
        surrogate: str = "atan",
        alpha: float = 2.0,
    ):
        super().__init__()
        if reset not in ("subtract", "value"):
            raise SDMError(f"unknown reset '{reset}': use subtract or value")
        if surrogate not in SURROGATES:
            raise SDMError(f"unknown surrogate '{surrogate}': use one of {', '.join(SURROGATES)}")
        if not 0.0 < decay <= 1.0:
            raise SDMError(f"decay must lie in (0, 1], got {decay}")
        threshold = torch.as_tensor(threshold, dtype=torch.float32)
        neg_threshold = torch.as_tensor(neg_threshold, dtype=torch.float32)
        if (threshold <= 0).any() or (neg_threshold < 0).any() or not torch.isfinite(threshold).all():
            raise SDMError("thresholds must be finite, threshold > 0 and neg_threshold >= 0")
        self.register_buffer("threshold", threshold)
        self.register_buffer("neg_threshold", neg_threshold)
        if signed and reset != "subtract":
            raise SDMError("signed neurons need reset by subtraction (their spikes move the membrane both ways)")
        if not 0.0 <= v_init < 1.0:
            raise SDMError(f"v_init must lie in [0, 1), got {v_init}")
        self.signed = bool(signed)
        self.v_init, self.reset_mode, self.reset_value = float(v_init), reset, float(reset_value)
        self.decay, self.surrogate, self.alpha = float(decay), surrogate, float(alpha)
        self.threshold_scale = 1.0
        self.v: torch.Tensor | None = None
        self.level: torch.Tensor | None = None  # net spike count of signed neurons
        self.record = False
        self.keep_counts = False  # keep the differentiable spike counts of the rate form (rate penalties)
        self.counts: list[torch.Tensor] = []
        self.spike_count = 0
        self.neuron_steps = 0

    def reset(self) -> None:
        """Forget the membrane potential: the next call starts a new input."""
        self.v, self.level = None, None
        self.counts = []

    def reset_stats(self) -> None:
        self.spike_count, self.neuron_steps = 0, 0

    def extra_repr(self) -> str:
        kind = "IF" if self.decay == 1.0 else f"LIF(decay={self.decay})"
        theta = f"{self.threshold.item():.4g}" if self.threshold.numel() == 1 else f"[{self.threshold.numel()} channels]"
        return f"{kind}, threshold={theta}, signed={self.signed}, v_init={self.v_init}, reset={self.reset_mode}"

    def _broadcast(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if value.numel() == 1:
            return value.reshape(())
        return value.view(-1, *([1] * (like.dim() - 2)))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise SDMError(f"neurons take [T, B, ...] inputs, got shape {tuple(x_seq.shape)}")
        theta = self._broadcast(self.threshold, x_seq[0]).to(x_seq.dtype) * self.threshold_scale
        theta_n = self._broadcast(self.neg_threshold, x_seq[0]).to(x_seq.dtype) * self.threshold_scale
        v = torch.zeros_like(x_seq[0]) if self.v is None else self.v
        level = torch.zeros_like(x_seq[0]) if self.level is None else self.level
        margin = 1.0 - self.v_init
        out = []
        for x in x_seq:
            v = v * self.decay + x if self.decay != 1.0 else v + x
            if self.signed:
                up = torch.where(level >= 0, theta, theta_n)
                down = torch.where(level > 0, theta, theta_n)
                fire_up = heaviside(v - up * margin, self.surrogate, self.alpha) * (up > 0)
                fire_down = heaviside(-v - down * margin, self.surrogate, self.alpha) * (down > 0)
                spike = fire_up * up - fire_down * down
                level = level + fire_up.detach() - fire_down.detach()
            else:
                spike = heaviside(v - theta * margin, self.surrogate, self.alpha) * theta
            if self.reset_mode == "subtract":
                v = v - spike
            else:
                fired = (spike != 0).to(v.dtype)
                v = v * (1 - fired) + self.reset_value * fired
            out.append(spike)
        self.level = level if self.signed else None
        self.v = v
        return self._counted(torch.stack(out))

    def _counted(self, spikes: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.spike_count += int((spikes != 0).sum())
            self.neuron_steps += spikes.numel()
        return spikes

    def _side_and_rate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a constant drive `x`: the size of its spikes (theta; theta_n below zero for signed
        neurons) and the drive in units of that size, whose T-step rounding is the spike count."""
        theta = self._broadcast(self.threshold, x).to(x.dtype) * self.threshold_scale
        if not self.signed:
            return theta, x / theta
        theta_n = self._broadcast(self.neg_threshold, x).to(x.dtype) * self.threshold_scale
        side = torch.where(x >= 0, theta, theta_n)
        return side, x.abs() / side.clamp(min=1e-12)

    def constant_rate(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """`constant_response(x, T).mean(0)` without the [T, ...] spike tensor (IF, fresh neuron).

        The spikes are still counted, so firing rates stay exact. Differentiable: the spike count's
        rounding passes gradients straight through, and the thresholds get LSQ's step-size gradient
        (what fine-tuning a converted network trains with).
        """
        if self.decay != 1.0 or self.reset_mode != "subtract" or self.v is not None:
            return self.constant_response(x, T).mean(0)
        side, rate = self._side_and_rate(x)
        count = torch.clamp(floor_ste(rate * T + self.v_init), 0, T)
        if self.signed:
            count = count * (side > 0)
        if self.record:
            self.spike_count += int(count.detach().sum())
            self.neuron_steps += count.numel() * T
        if self.keep_counts:
            self.counts.append(count)
        return count * (torch.sign(x) * side if self.signed else side) / T

    def learn_thresholds(self) -> list[nn.Parameter]:
        """Turn the thresholds into parameters (same state-dict names); returns the learnable ones.

        A threshold of zero (a side that never spikes) stays a buffer: it has nothing to learn.
        """
        learnable = []
        for name in ("threshold", "neg_threshold"):
            value = getattr(self, name)
            if isinstance(value, nn.Parameter) or not (value > 0).all():
                continue
            delattr(self, name)
            setattr(self, name, nn.Parameter(value.detach().clone()))
            learnable.append(getattr(self, name))
        return learnable

    def constant_response(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """The spike train [T, ...] of a fresh neuron driven by the same input `x` at every step.

        For an integrate-and-fire neuron reset by subtraction the count after t steps is known in closed
        form, n_t = min(t, floor(t*a/theta + v_init)) (mirrored with theta_n below zero), so no step loop
        is needed; tests check it against `forward`. Leaky neurons are simulated.
        """
        if self.decay != 1.0 or self.reset_mode != "subtract" or self.v is not None or torch.is_grad_enabled():
            return self.forward(x.unsqueeze(0).expand(T, *x.shape))
        side, rate = self._side_and_rate(x)
        steps = torch.arange(1, T + 1, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
        count = torch.minimum(steps, (steps * rate).add_(self.v_init).floor_()).clamp_(min=0)
        spikes = torch.diff(count, dim=0, prepend=torch.zeros_like(count[:1]))
        spikes.mul_(torch.sign(x) * side if self.signed else side)
        self.v = x * T - spikes.sum(0)
        self.level = (count[-1] * torch.sign(x) * (side > 0)) if self.signed else None
        return self._counted(spikes)


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire: no leak."""

    def __init__(self, threshold: float | torch.Tensor = 1.0, **kwargs):
        super().__init__(threshold, decay=1.0, **kwargs)


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire: v <- (1 - 1/tau) v + x each step."""

    def __init__(self, threshold: float | torch.Tensor = 1.0, *, tau: float = 2.0, **kwargs):
        if tau <= 1.0:
            raise SDMError(f"tau must exceed 1 (tau = 1 forgets everything each step), got {tau}")
        super().__init__(threshold, decay=1.0 - 1.0 / tau, **kwargs)
        self.tau = tau


NEURONS = {"if": IFNeuron, "lif": LIFNeuron}


def spiking_neurons(model: nn.Module) -> list[SpikingNeuron]:
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


@contextlib.contextmanager
def scaled_thresholds(model: nn.Module, scale: float):
    """Threshold guidance: every neuron's threshold times `scale` inside the block (training-free;
    above 1 inhibits, below 1 excites). Scale 1 leaves any model, ANN included, untouched."""
    neurons = spiking_neurons(model)
    if scale != 1.0 and not neurons:
        raise SDMError(f"threshold guidance needs a spiking model; this {type(model).__name__} has no neurons")
    if not scale > 0:
        raise SDMError(f"--threshold-scale must be positive, got {scale}")
    previous = [n.threshold_scale for n in neurons]
    for n in neurons:
        n.threshold_scale = scale
    try:
        yield model
    finally:
        for n, value in zip(neurons, previous, strict=True):
            n.threshold_scale = value


def reset_neurons(model: nn.Module) -> None:
    """Explicit state reset between independent inputs (each denoising step is one)."""
    for neuron in spiking_neurons(model):
        neuron.reset()
