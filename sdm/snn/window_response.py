"""What a neuron does with one drive held for a window: the closed forms of window mode.

In window mode a neuron holds the window value of its input for the whole window. For an IF neuron
reset by subtraction its answer is known in closed form in both spike codes (`sdm.snn.coding`): the
spike train (`constant_response`, what the step executor runs) and its window value (`constant_rate`,
the rate executor's one rounding to the code's levels, differentiable for fine-tuning). A mixin of
`SpikingNeuron`, apart from the step dynamics in `sdm.snn.neurons`.
"""

from __future__ import annotations

import torch

from sdm.errors import SDMError
from sdm.snn.coding import SpikeCode
from sdm.snn.surrogate import floor_ste


class WindowResponse:
    """The window-mode responses of a `SpikingNeuron` (which provides the thresholds, the step loop
    `forward`, `_broadcast` and `_counted`)."""

    def _side_and_rate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a constant drive `x`: the size of its spikes (theta; theta_n below zero for signed
        neurons) and the drive in units of that size, whose T-step rounding is the spike count."""
        theta = self._broadcast(self.threshold, x).to(x.dtype) * self.threshold_scale
        if not self.signed:
            return theta, x / theta
        theta_n = self._broadcast(self.neg_threshold, x).to(x.dtype) * self.threshold_scale
        side = torch.where(x >= 0, theta, theta_n)
        return side, x.abs() / side.clamp(min=1e-12)

    def constant_rate(self, x: torch.Tensor, code: SpikeCode) -> torch.Tensor:
        """`constant_response(x, code)` read as `code.window` reads it, without the [T, ...] spike tensor
        (IF, fresh neuron): the drive rounded to the code's levels, count = clamp(floor(x L / theta +
        v_init), 0, L) for L = `code.levels`, times theta / L.

        The spikes are still counted (a weighted code's by popcount), so firing rates stay exact.
        Differentiable: the count's rounding passes gradients straight through, and the thresholds get
        LSQ's step-size gradient (what fine-tuning a converted network trains with).
        """
        if not self.closed_form or self.reset_mode != "subtract" or self.v is not None:
            return code.window(self.constant_response(x, code))
        if not (torch.is_grad_enabled() or self.keep_counts):
            return self._rounded_rate(x, code)
        side, rate = self._side_and_rate(x)
        levels = code.levels
        count = torch.clamp(floor_ste(rate * levels + self.v_init), 0, levels)
        if self.signed:
            count = count * (side > 0)
        if self.counter is not None:
            self.counter.add(self, int(code.spikes(count.detach()).sum()), count.numel() * code.T)
        if self.keep_counts:
            self.counts.append(code.spikes(count))
        return count * (torch.sign(x) * side if self.signed else side) / levels

    @torch.no_grad()
    def _rounded_rate(self, x: torch.Tensor, code: SpikeCode) -> torch.Tensor:
        """`constant_rate` for inference: the same numbers in a few in-place passes, no sign/side tensors.

        Each side is count = clamp(floor(|x| L / theta + v_init), 0, L): the upward count is zero for
        x < 0 and the downward one for x >= 0, so the two add up without selecting by sign.
        """
        levels = code.levels
        theta = self._broadcast(self.threshold, x).to(x.dtype) * self.threshold_scale
        up = torch.mul(x, levels / theta).add_(self.v_init).floor_().clamp_(0, levels)
        spikes = code.spikes(up).sum() if self.counter is not None else 0
        out = up.mul_(theta / levels)
        if self.signed:
            theta_n = self._broadcast(self.neg_threshold, x).to(x.dtype) * self.threshold_scale
            gain = torch.where(theta_n > 0, -levels / theta_n.clamp(min=1e-12), torch.zeros_like(theta_n))
            down = torch.mul(x, gain).add_(self.v_init).floor_().clamp_(0, levels)
            if self.counter is not None:
                spikes = spikes + code.spikes(down).sum()
            out = out.addcmul_(down, theta_n, value=-1.0 / levels)
        if self.counter is not None:
            self.counter.add(self, int(spikes), x.numel() * code.T)
        return out

    def constant_response(self, x: torch.Tensor, code: SpikeCode) -> torch.Tensor:
        """The spike train [T, ...] of a fresh neuron that holds the constant drive `x` for a window.

        Rate code: the drive is the input at every step. For an integrate-and-fire neuron reset by
        subtraction the count after t steps is known in closed form, n_t = floor(t * min(a/theta, 1) +
        v_init) (mirrored with theta_n below zero), so no step loop is needed; tests check it against
        `forward`. Leaky neurons are simulated. Weighted code: `_weighted_response`.
        """
        if code.name == "weighted":
            return self._weighted_response(x, code)
        T = code.T
        if not self.closed_form or self.reset_mode != "subtract" or self.v is not None or torch.is_grad_enabled():
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

    @torch.no_grad()
    def _weighted_response(self, x: torch.Tensor, code: SpikeCode) -> torch.Tensor:
        """The weighted code's K steps, simulated: the membrane takes the window's drive (|x| on the side
        of its sign, for signed neurons) plus v_init of the smallest threshold, then at step k fires if it
        reaches theta 2^(K-1-k) / (2^K - 1) and subtracts it. Each spike is emitted at the side's
        threshold theta; `SpikeCode.window` gives it its step's worth. Integrate-and-fire only."""
        if not self.closed_form or self.reset_mode != "subtract":
            raise SDMError(f"the weighted code needs integrate-and-fire neurons reset by subtraction, not "
                           f"{type(self).__name__} with reset={self.reset_mode}")
        side, _ = self._side_and_rate(x)
        size = torch.sign(x) * side if self.signed else side
        step = side / code.levels
        v = (x.abs() if self.signed else x) + self.v_init * step
        spikes = torch.empty(code.T, *x.shape, dtype=x.dtype, device=x.device)
        for k, weight in enumerate(code.step_weights()):
            fires = (v >= weight * step) & (side > 0)
            v = v - fires * (weight * step)
            spikes[k] = fires * size
        self.v = v - self.v_init * step
        return self._counted(spikes)
