"""Multi-step spiking neurons (SpikingJelly's convention: inputs shaped [T, B, ...]).

One set of classes serves conversion (thresholds from calibration, signed spikes, half-threshold
initial potential) and direct training (binary spikes, surrogate gradients). As in SpikingJelly's
`BaseNode`, a neuron integrates (its charge step: IF adds the input, LIF leaks first), fires and
resets; IF and LIF differ by the charge step alone. State persists across calls until `reset()`;
models call `reset_neurons` before every forward pass. How neurons run (spike counting, threshold
guidance, kept counts) is set for a block of code by the context managers of `sdm.snn.modes`; what a
neuron answers to one drive held for a window (both spike codes) is `sdm.snn.window_response`.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from sdm.errors import SDMError
from sdm.snn.surrogate import SURROGATES, FusedFire, heaviside
from sdm.snn.window_response import WindowResponse


class SpikingNeuron(WindowResponse, nn.Module, abc.ABC):
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
        surrogate: str = "atan",
        alpha: float = 2.0,
    ):
        super().__init__()
        if reset not in ("subtract", "value"):
            raise SDMError(f"unknown reset '{reset}': use subtract or value")
        if surrogate not in SURROGATES:
            raise SDMError(f"unknown surrogate '{surrogate}': use one of {', '.join(SURROGATES)}")
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
        self.surrogate, self.alpha = surrogate, float(alpha)
        self.v: torch.Tensor | None = None
        self.level: torch.Tensor | None = None  # net spike count of signed neurons
        self.counts: list[torch.Tensor] = []
        # Modes, each set for a block by `sdm.snn.modes` (`compiled_loop` by `compile_neurons`):
        self.threshold_scale = 1.0  # threshold guidance (`scaled_thresholds`)
        self.counter = None         # a `SpikeCounts` that this neuron's spikes are added to (`counting`)
        self.keep_counts = False    # keep the differentiable spike counts of the rate form (`keeping_counts`)
        self.compiled_loop = None   # the step loop compiled for inference (`sdm.snn.compiled`)

    # The charge step, SpikingJelly's `neuronal_charge`: what IF and LIF differ by.
    closed_form = False  # whether constant inputs have a closed-form spike train (`constant_response`)

    @abc.abstractmethod
    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The membrane after integrating input `x` (out of place: autograd records it)."""

    @abc.abstractmethod
    def charge_(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`charge` in place, in `v`."""

    @abc.abstractmethod
    def charge_backward(self, grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """dL/dv_{t-1} from dL/dh_t: the gradient times d charge / d v (into `out` where it is not `grad`)."""

    def reset(self) -> None:
        """Forget the membrane potential: the next call starts a new input."""
        self.v, self.level = None, None
        self.counts = []

    def extra_repr(self) -> str:
        kind = type(self).__name__.removesuffix("Neuron")
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
        tracked = torch.is_grad_enabled() and any(a.requires_grad for a in (x_seq, theta, theta_n, v))
        if not tracked and self.compiled_loop is not None:
            with torch.no_grad():
                out, v, level = self.compiled_loop(self, x_seq, v, level, theta, theta_n)
        elif not tracked:
            out, v, level = self._simulate(x_seq, v, level, theta, theta_n)
        elif not (self.signed or theta.requires_grad or v.requires_grad):
            out, v = FusedFire.apply(x_seq, v, theta, self)
        else:
            out, v, level = self._simulate_with_autograd(x_seq, v, level, theta, theta_n)
        self.level = level if self.signed else None
        self.v = v
        return self._counted(out)

    @torch.no_grad()
    def _simulate(self, x_seq, v, level, theta, theta_n, membranes: torch.Tensor | None = None):
        """The step loop without autograd, in place: inference, and the forward of `FusedFire`
        (which keeps each step's membrane before firing in `membranes`)."""
        margin = 1.0 - self.v_init
        out = torch.empty_like(x_seq)
        v = v.clone()
        level = level.clone()
        fire_at = theta * margin
        silent = torch.empty_like(x_seq[0])
        if self.signed:
            zero_side = bool((theta_n == 0).any())
            above, below, positive, rest, size_up, size_down, rises, falls, edge = (
                torch.empty_like(x_seq[0]) for _ in range(9))
        for t, x in enumerate(x_seq):
            # With `membranes`, h_t is kept: the membrane lives in membranes[t] for this step.
            v = self.charge_(v if membranes is None else membranes[t].copy_(v), x)
            spike = out[t]
            if self.signed:  # 0/1 float masks and exact selections m*a + (1-m)*b instead of branches
                torch.ge(level, 0, out=above)
                torch.gt(level, 0, out=positive)
                _select(theta, theta_n, above, torch.lt(level, 0, out=below), out=size_up)
                _select(theta, theta_n, positive, torch.le(level, 0, out=rest), out=size_down)
                torch.ge(v, torch.mul(size_up, margin, out=edge), out=rises)
                torch.le(v, torch.mul(size_down, -margin, out=edge), out=falls)
                if zero_side:  # a side whose spike size is 0 never fires
                    falls.mul_(size_down > 0)
                torch.mul(rises, size_up, out=spike).addcmul_(falls, size_down, value=-1)
                level.add_(rises).sub_(falls)
            else:
                torch.ge(v, fire_at, out=spike).mul_(theta)
            # With `membranes`, v is membranes[t], kept as it was before firing: the reset makes a new v.
            if self.reset_mode == "subtract":
                v = torch.sub(v, spike) if membranes is not None else v.sub_(spike)
            elif self.reset_value == 0.0:  # a float mask product: several times faster than masked_fill
                torch.eq(spike, 0, out=silent)
                v = torch.mul(v, silent) if membranes is not None else v.mul_(silent)
            elif membranes is not None:
                v = v.masked_fill(spike != 0, self.reset_value)
            else:
                v.masked_fill_(spike != 0, self.reset_value)
        return out, v, level

    def _simulate_with_autograd(self, x_seq, v, level, theta, theta_n):
        """The step loop recorded by autograd: learnable thresholds, signed neurons in training, and
        a state carried over from a tracked call. Tests hold `FusedFire` to its gradients."""
        margin = 1.0 - self.v_init
        out = []
        for x in x_seq:
            v = self.charge(v, x)
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
        return torch.stack(out), v, level

    def _counted(self, spikes: torch.Tensor) -> torch.Tensor:
        if self.counter is not None:
            self.counter.add(self, int((spikes != 0).sum()), spikes.numel())
        return spikes

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


def _select(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, inverse: torch.Tensor, out: torch.Tensor):
    """mask * a + (1 - mask) * b for a 0/1 float mask and its inverse: exactly a or b, branch-free."""
    return torch.mul(mask, a, out=out).addcmul_(inverse, b)


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire: the membrane adds the input, no leak."""

    closed_form = True

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v + x

    def charge_(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v.add_(x)

    def charge_backward(self, grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return grad


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire: v <- (1 - 1/tau) v + x each step."""

    def __init__(self, threshold: float | torch.Tensor = 1.0, *, tau: float = 2.0, **kwargs):
        if tau <= 1.0:
            raise SDMError(f"tau must exceed 1 (tau = 1 forgets everything each step), got {tau}")
        super().__init__(threshold, **kwargs)
        self.tau, self.decay = tau, 1.0 - 1.0 / tau

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v * self.decay + x

    def charge_(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v.mul_(self.decay).add_(x)

    def charge_backward(self, grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.mul(grad, self.decay, out=out)


NEURONS = {"if": IFNeuron, "lif": LIFNeuron}


def spiking_neurons(model: nn.Module) -> list[SpikingNeuron]:
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def reset_neurons(model: nn.Module) -> None:
    """Explicit state reset between independent inputs (each denoising step is one)."""
    for neuron in spiking_neurons(model):
        neuron.reset()
