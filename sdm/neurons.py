"""Multi-step spiking neurons (SpikingJelly's convention: inputs shaped [T, B, ...]).

One set of classes serves conversion (thresholds from calibration, signed spikes, half-threshold
initial potential) and direct training (binary spikes, surrogate gradients). State persists across
calls, as in SpikingJelly, until `reset()`; models call `reset_neurons` before every forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

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


# Surrogate derivatives: one new tensor each, the rest in place (they run over whole [T, B, ...] tensors).
def _atan(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.mul(x, math.pi / 2 * alpha).square_().add_(1).reciprocal_().mul_(alpha / 2)


def _sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    s = torch.mul(x, alpha).sigmoid_()
    return s.mul_(torch.sub(1, s)).mul_(alpha)


def _rectangle(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x.abs() < 0.5 / alpha).to(x.dtype).mul_(alpha)


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
        self.compiled = False  # run inference through `compiled_steps` (see `compile_neurons`)
        self.keep_counts = False  # keep the differentiable spike counts of the rate form (`keeping_counts`)
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
        tracked = torch.is_grad_enabled() and any(a.requires_grad for a in (x_seq, theta, theta_n, v))
        if not tracked and self.compiled and (compiled := compiled_steps()) is not None:
            with torch.no_grad():
                out, v, level = compiled(self, x_seq, v, level, theta, theta_n)
        elif not tracked:
            out, v, level = self._simulate(x_seq, v, level, theta, theta_n)
        elif not (self.signed or theta.requires_grad or v.requires_grad):
            out, v = _FusedFire.apply(x_seq, v, theta, self)
        else:
            out, v, level = self._simulate_with_autograd(x_seq, v, level, theta, theta_n)
        self.level = level if self.signed else None
        self.v = v
        return self._counted(out)

    @torch.no_grad()
    def _simulate(self, x_seq, v, level, theta, theta_n, membranes: torch.Tensor | None = None):
        """The step loop without autograd, in place: inference, and the forward of `_FusedFire`
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
            if membranes is not None:  # h_t is kept: the membrane lives in it for this step
                v = torch.mul(v, self.decay, out=membranes[t]).add_(x)
            elif self.decay != 1.0:
                v.mul_(self.decay).add_(x)
            else:
                v.add_(x)
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
        a state carried over from a tracked call. Tests hold `_FusedFire` to its gradients."""
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
        return torch.stack(out), v, level

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
        if not (torch.is_grad_enabled() or self.keep_counts):
            return self._rounded_rate(x, T)
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

    @torch.no_grad()
    def _rounded_rate(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """`constant_rate` for inference: the same numbers in a few in-place passes, no sign/side tensors.

        Each side is count = clamp(floor(|x| T / theta + v_init), 0, T): the upward count is zero for
        x < 0 and the downward one for x >= 0, so the two add up without selecting by sign.
        """
        theta = self._broadcast(self.threshold, x).to(x.dtype) * self.threshold_scale
        up = torch.mul(x, T / theta).add_(self.v_init).floor_().clamp_(0, T)
        spikes = up.sum() if self.record else 0
        out = up.mul_(theta / T)
        if self.signed:
            theta_n = self._broadcast(self.neg_threshold, x).to(x.dtype) * self.threshold_scale
            gain = torch.where(theta_n > 0, -T / theta_n.clamp(min=1e-12), torch.zeros_like(theta_n))
            down = torch.mul(x, gain).add_(self.v_init).floor_().clamp_(0, T)
            if self.record:
                spikes = spikes + down.sum()
            out = out.addcmul_(down, theta_n, value=-1.0 / T)
        if self.record:
            self.spike_count += int(spikes)
            self.neuron_steps += x.numel() * T
        return out

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
        form, n_t = floor(t * min(a/theta, 1) + v_init) (mirrored with theta_n below zero), so no step loop
        is needed; tests check it against `forward`. Leaky neurons are simulated.
        """
        if self.decay != 1.0 or self.reset_mode != "subtract" or self.v is not None or torch.is_grad_enabled():
            return self.forward(x.unsqueeze(0).expand(T, *x.shape))
        side, rate = self._side_and_rate(x)
        # A rate clipped to [0, 1] makes floor(t * rate + v_init) count at most one spike per step by
        # itself; counting from t = 0 (no spike yet) turns the spikes into one subtraction.
        steps = torch.arange(0, T + 1, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
        count = (steps * rate.clamp_(0, 1)).add_(self.v_init).floor_()
        size = torch.sign(x) * side if self.signed else side
        spikes = torch.sub(count[1:], count[:-1]).mul_(size)
        self.v = x * T - count[-1] * size
        self.level = (count[-1] * torch.sign(x) * (side > 0)) if self.signed else None
        return self._counted(spikes)


def _select(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, inverse: torch.Tensor, out: torch.Tensor):
    """mask * a + (1 - mask) * b for a 0/1 float mask and its inverse: exactly a or b, branch-free."""
    return torch.mul(mask, a, out=out).addcmul_(inverse, b)


@functools.cache
def compiled_steps():
    """`SpikingNeuron._simulate_with_autograd` compiled for inference: inductor fuses its T steps into
    one pass over memory where the eager loop makes a dozen per step (the tests hold the eager loops to
    the same outputs). Static shapes (dynamic ones defeat inductor's vectorisation on CPUs); None where
    torch.compile cannot build it here."""
    try:
        compiled = torch.compile(SpikingNeuron._simulate_with_autograd, dynamic=False)
        probe = torch.zeros(2, 1, 2)
        with torch.no_grad():
            compiled(IFNeuron(signed=True, neg_threshold=1.0), probe, probe[0], probe[0], torch.ones(()), torch.ones(()))
        return compiled
    except Exception as error:  # no C++ compiler, unsupported platform, ...: the eager loop is exact too
        warnings.warn(f"torch.compile is unavailable here ({type(error).__name__}: {error}); neurons run "
                      "their eager step loop", stacklevel=2)
        return None


def compile_neurons(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Run every neuron's inference step loop compiled (`compiled_steps`); training keeps its own paths.

    Pays where neurons integrate inputs that change from step to step (directly trained SDMs, spiking
    blocks fed by spikes); a converted window-mode SNN mostly drives its neurons with constant inputs,
    which take the closed form instead. The first call of each new shape compiles for seconds.
    """
    for neuron in spiking_neurons(model):
        neuron.compiled = enabled
    return model


class _FusedFire(torch.autograd.Function):
    """Backpropagation through time of an unsigned neuron as one autograd node.

    The forward runs the in-place step loop and keeps only each step's membrane h_t (before firing);
    the backward evaluates every step's surrogate derivative at once and runs the recursion
    dL/dh_t = dL/dv_t (1 - theta s'_t) + dL/dout_t theta s'_t   (reset by subtraction; by value:
    dL/dv_t (1 - fired_t) + dL/dout_t theta s'_t),  dL/dv_{t-1} = decay dL/dh_t,
    the same gradients autograd takes through `_simulate_with_autograd`, without its per-step graph.
    """

    @staticmethod
    def forward(ctx, x_seq, v, theta, neuron):
        membranes = torch.empty_like(x_seq)
        out, v, _ = neuron._simulate(x_seq, v, torch.zeros(()), theta, theta, membranes)
        ctx.save_for_backward(membranes, theta)
        ctx.neuron = neuron
        return out, v

    @staticmethod
    def backward(ctx, grad_out, grad_v):
        membranes, theta = ctx.saved_tensors
        neuron = ctx.neuron
        shifted = membranes - theta * (1.0 - neuron.v_init)
        slope = SURROGATES[neuron.surrogate](shifted, neuron.alpha).mul_(theta)  # d out_t / d h_t
        keep = None if neuron.reset_mode == "subtract" else (shifted < 0).to(membranes.dtype)  # 1 - fired_t
        del shifted
        grad_x = torch.zeros_like(membranes) if grad_out is None else grad_out.clone()
        carried = torch.zeros_like(membranes[0]) if grad_v is None else grad_v.clone()
        for t in range(len(membranes) - 1, -1, -1):
            grad_h = grad_x[t]  # holds dL/dout_t; becomes dL/dh_t
            if keep is None:
                grad_h.sub_(carried).mul_(slope[t]).add_(carried)
            else:
                grad_h.mul_(slope[t]).addcmul_(carried, keep[t])
            carried = torch.mul(grad_h, neuron.decay, out=carried) if neuron.decay != 1.0 else grad_h
        return grad_x, None, None, None


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


@contextlib.contextmanager
def keeping_counts(model: nn.Module):
    """Inside the block every neuron keeps the differentiable spike counts of its rate-form calls
    (`SpikingNeuron.counts`, emptied by each reset); yields the neurons. For losses on spikes."""
    neurons = spiking_neurons(model)
    for n in neurons:
        n.keep_counts = True
    try:
        yield neurons
    finally:
        for n in neurons:
            n.keep_counts = False


def reset_neurons(model: nn.Module) -> None:
    """Explicit state reset between independent inputs (each denoising step is one)."""
    for neuron in spiking_neurons(model):
        neuron.reset()
