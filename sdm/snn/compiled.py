"""Neurons' inference step loop compiled by torch.compile, where it pays (inputs that change per step)."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from sdm.snn.neurons import IFNeuron, SpikingNeuron, spiking_neurons


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
    loop = compiled_steps() if enabled else None
    for neuron in spiking_neurons(model):
        neuron.compiled_loop = loop
    return model
