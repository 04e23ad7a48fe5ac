"""Surrogate gradients: a spike's step function forward, a smooth derivative backward, and
backpropagation through time of an unsigned neuron as one autograd node."""

from __future__ import annotations

import math

import torch


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


class FusedFire(torch.autograd.Function):
    """Backpropagation through time of an unsigned neuron as one autograd node.

    The forward runs the in-place step loop and keeps only each step's membrane h_t (before firing);
    the backward evaluates every step's surrogate derivative at once and runs the recursion
    dL/dh_t = dL/dv_t (1 - theta s'_t) + dL/dout_t theta s'_t   (reset by subtraction; by value:
    dL/dv_t (1 - fired_t) + dL/dout_t theta s'_t),  dL/dv_{t-1} = (dv_t/dv_{t-1}) dL/dh_t (the neuron's `charge_backward`),
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
            carried = neuron.charge_backward(grad_h, out=carried)
        return grad_x, None, None, None


