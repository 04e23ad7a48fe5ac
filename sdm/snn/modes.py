"""How a network's neurons run, set for a block of code: spike counting, threshold guidance, kept counts.

Each mode is a context manager, so no caller sets a flag and restores it by hand; `assigned` is the
one place where a setting is put on modules and taken back, even when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import nn

from sdm.errors import SDMError
from sdm.snn.neurons import SpikingNeuron, spiking_neurons


@contextlib.contextmanager
def assigned(objects: Iterable, attribute: str, value) -> Iterator[None]:
    """Every object's `attribute` set to `value` inside the block, and back to its own value after it."""
    objects = list(objects)
    previous = [getattr(o, attribute) for o in objects]
    for o in objects:
        setattr(o, attribute, value)
    try:
        yield
    finally:
        for o, old in zip(objects, previous, strict=True):
            setattr(o, attribute, old)


class SpikeCounts:
    """Spikes and neuron-steps per neuron, added to by the neurons while `counting` is on."""

    def __init__(self):
        self.by_neuron: dict[SpikingNeuron, list[int]] = {}

    def add(self, neuron: SpikingNeuron, spikes: int, neuron_steps: int) -> None:
        entry = self.by_neuron.setdefault(neuron, [0, 0])
        entry[0] += spikes
        entry[1] += neuron_steps

    def spikes(self, neurons: Iterable[SpikingNeuron] | None = None) -> int:
        return sum(self.by_neuron.get(n, (0, 0))[0] for n in self._chosen(neurons))

    def neuron_steps(self, neurons: Iterable[SpikingNeuron] | None = None) -> int:
        return sum(self.by_neuron.get(n, (0, 0))[1] for n in self._chosen(neurons))

    def rate(self, neurons: Iterable[SpikingNeuron] | None = None) -> float:
        """Spikes per neuron and step, over `neurons` (every counted one when None); 0 without steps."""
        neurons = list(self._chosen(neurons))
        steps = self.neuron_steps(neurons)
        return self.spikes(neurons) / steps if steps else 0.0

    def _chosen(self, neurons):
        return self.by_neuron if neurons is None else neurons


@contextlib.contextmanager
def counting(model: nn.Module | Iterable[SpikingNeuron]) -> Iterator[SpikeCounts]:
    """Count the spikes of every neuron of `model` (a module, or the neurons themselves) in the block."""
    neurons = spiking_neurons(model) if isinstance(model, nn.Module) else list(model)
    counts = SpikeCounts()
    with assigned(neurons, "counter", counts):
        yield counts


@contextlib.contextmanager
def scaled_thresholds(model: nn.Module, scale: float) -> Iterator[nn.Module]:
    """Threshold guidance: every neuron's threshold times `scale` inside the block (training-free;
    above 1 inhibits, below 1 excites). Scale 1 leaves any model, ANN included, untouched."""
    neurons = spiking_neurons(model)
    if scale != 1.0 and not neurons:
        raise SDMError(f"threshold guidance needs a spiking model; this {type(model).__name__} has no neurons")
    if not scale > 0:
        raise SDMError(f"the threshold scale must be positive, got {scale}")
    with assigned(neurons, "threshold_scale", scale):
        yield model


@contextlib.contextmanager
def keeping_counts(model: nn.Module) -> Iterator[list[SpikingNeuron]]:
    """Inside the block every neuron keeps the differentiable spike counts of its rate-form calls
    (`SpikingNeuron.counts`, emptied by each reset); yields the neurons. For losses on spikes."""
    neurons = spiking_neurons(model)
    with assigned(neurons, "keep_counts", True):
        yield neurons
