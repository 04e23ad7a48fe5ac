"""What a converted SNN spends, counted once for every user: one walk of its step-by-step graph records
each synaptic layer (its role, operations and input activity), window accumulation, Horner doublings,
attention products and analog non-synaptic ops. The energy report (`sdm.snn.energy`, through
`ConvertedUNet.layer_activity`), the compute profile, the site costs of the budgeted site choice and the
fine-tuning energy term all read these records."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx

from calibration.graph import sample_dependent, source_through_pass_through
from convert.passes import layer_name
from sdm.snn.energy import ROLES, LayerActivity, distinct_steps, synaptic_ops
from sdm.snn.temporal import SpikingActivation

aten = torch.ops.aten


def _spike_sources(node: fx.Node, spiking_targets: set[str]) -> list[tuple[str, float]] | None:
    """The neuron modules whose spikes `node` carries, each with its share of the channels; None when
    any part of it is analog."""
    node = source_through_pass_through(node)
    if node.op == "call_function" and node.target is aten.cat.default:
        parts = [(_spike_sources(n, spiking_targets), _channels(n)) for n in node.args[0]]
        if any(sources is None for sources, _ in parts):
            return None
        total = sum(c for _, c in parts) or 1
        return [(name, share * c / total) for sources, c in parts for name, share in sources]
    return [(node.target, 1.0)] if node.op == "call_module" and node.target in spiking_targets else None


def _channels(node: fx.Node) -> int:
    value = node.meta.get("val")
    return int(value.shape[1]) if isinstance(value, torch.Tensor) and value.dim() > 1 else 1


@dataclass
class _OpRecord:
    """What one walk through the graph learnt about one op, per image, over the T steps."""

    name: str
    role: str          # a role of `sdm.snn.energy.ROLES`
    ops: float         # MACs (synaptic layers, attention products) or FLOPs (non-synaptic analog ops)
    input_rate: float  # fraction of non-zero inputs (synaptic layers)
    sources: tuple[tuple[str, float], ...] = ()  # spiking layers: the neuron modules feeding them
    inputs: float = 0.0  # synaptic layers: input values per image and spiking step
    macs_per_step: float | None = None  # MACs of one spiking step (the ANN's share of this op)


class _Walk(fx.Interpreter):
    """Runs the step-by-step graph once and records every synaptic layer and analog op."""

    def __init__(self, snn, batch: int):
        super().__init__(snn.graph)
        self.T, self.batch, self.code = snn.T, batch, snn.conversion.code
        self.modules = dict(snn.graph.named_modules())
        self.spiking = {path for path in snn.summary.neurons.values() if self.modules[path].spiking}
        self.image_path = sample_dependent(snn.graph.graph)
        self.input = next(n for n in snn.graph.graph.nodes if n.op == "placeholder")
        self.records: list[_OpRecord] = []

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if node.op == "call_function" and node.target in (aten.conv2d.default, aten.linear.default):
            self._synaptic(node, result)
        elif node.op == "call_module" and node.target == "window_value":
            self._accumulation(node)
            self._doublings(node, (0,))
        elif node.op == "call_module" and (node.target.startswith("analog.") or node.target in self.modules
                                           and isinstance(self.modules[node.target], SpikingActivation)):
            self._nonsynaptic(node, result)
            module = self.modules[node.target]
            if module.mode == "window":
                self._doublings(node, getattr(module, "sequence_args", (0,)))
        return result

    def _doublings(self, node: fx.Node, sequence_args: tuple[int, ...]) -> None:
        """The weighted code's receivers read a window in Horner form: one doubling per value and step
        after the first, wherever a window of step-varying values is read (none in the rate code)."""
        if not self.code.doublings_per_value:
            return
        values = sum(x.numel() / self.T / self.batch for x in (self.env[node.args[i]] for i in sequence_args)
                     if distinct_steps(x, self.batch) > 1)
        if values:
            self.records.append(_OpRecord("doublings (weighted code, Horner)", "nonsynaptic",
                                          values * self.code.doublings_per_value, 0.0))

    def _synaptic(self, node: fx.Node, result: torch.Tensor) -> None:
        x, weight = self.env[node.args[0]], self.env[node.args[1]]
        rate = float((x != 0).float().mean()) if x.numel() else 0.0
        sources = _spike_sources(node.args[0], self.spiking) if node in self.image_path else None
        if node not in self.image_path:
            role = "timestep"
        elif sources is not None:
            role = "spiking"
        else:
            role = "input" if self._reads_input(node.args[0]) else "analog"
        macs, per_step = synaptic_ops(x, result.numel(), weight[0].numel(), self.batch, spiking=role == "spiking")
        steps = max(x.shape[0] // self.batch, 1)  # spiking steps folded into the input (1: once per window)
        self.records.append(_OpRecord(layer_name(node), role, macs, rate, tuple(sources or ()), x.numel() / self.batch / steps,
                                      per_step))

    def _accumulation(self, node: fx.Node) -> None:
        """A window mean: each step's value added into an accumulator (the 1/T folds into the weights
        that read it), T - 1 additions per value where the steps differ, none where they repeat."""
        x = self.env[node.args[0]]
        additions = (distinct_steps(x, self.batch) - 1) * x.numel() / self.T / self.batch
        if additions:
            reader = next(iter(node.users), None)
            name = f"{layer_name(reader) if reader is not None and reader.op != 'output' else 'output'} (window accumulation)"
            self.records.append(_OpRecord(name, "accumulation", additions, 1.0))

    def _reads_input(self, node: fx.Node) -> bool:
        origin = source_through_pass_through(node)
        if origin.op == "call_module" and origin.target == "repeat_time":
            origin = origin.args[0]
        return origin is self.input

    def _nonsynaptic(self, node: fx.Node, result: torch.Tensor) -> None:
        module = self.modules[node.target]
        runs = 1 if module.mode == "window" else self.T
        per_run = result.numel() / self.T / self.batch
        if isinstance(module, SpikingActivation):
            if module.transfer != "neuron":
                op = getattr(getattr(module.function, "func", module.function), "__name__", "activation")
                self.records.append(_OpRecord(f"{op.split('.')[0]} of the mean", "nonsynaptic", per_run * runs, 0.0))
            return
        kind = module.fn.__name__.split(".")[0]
        if kind == "scaled_dot_product_attention":
            q, k = self.env[node.args[0]].shape, self.env[node.args[1]].shape
            scores = math.prod(q[1:-1]) * k[-2]
            self.records.append(_OpRecord(module.name, "attention", 2 * scores * q[-1] * runs, 1.0,
                                          macs_per_step=2 * scores * q[-1]))
            self.records.append(_OpRecord("softmax", "nonsynaptic", scores * runs, 0.0))
        else:
            self.records.append(_OpRecord(kind, "nonsynaptic", per_run * runs, 0.0))


@torch.no_grad()
def walk(snn, sample: torch.Tensor, timestep: torch.Tensor) -> list[_OpRecord]:
    """Records of one step-by-step forward pass of `snn` on (sample, timestep)."""
    with snn.executing("steps"):  # account on the step-by-step graph, whose tensors carry the T steps
        snn.reset_state()
        interpreter = _Walk(snn, sample.shape[0])
        interpreter.run(sample, timestep.expand(sample.shape[0]) if timestep.dim() == 0 else timestep)
        return interpreter.records


def layer_activity(snn, sample: torch.Tensor, timestep: torch.Tensor) -> list[LayerActivity]:
    """Every synaptic layer, attention product and analog non-synaptic op, for `sdm.snn.energy.energy_report`."""
    return [LayerActivity(r.name, r.role, r.ops, r.input_rate, r.macs_per_step) for r in walk(snn, sample, timestep)]


def _blank_walk(snn) -> list[_OpRecord]:
    """Records of one image (all zeros, t = 0): enough for dense operation counts, which do not depend
    on the values."""
    device, dtype = next(snn.parameters()).device, next(snn.parameters()).dtype
    size, channels = snn.config.sample_size, snn.config.in_channels
    return walk(snn, torch.zeros(1, channels, size, size, device=device, dtype=dtype),
                torch.zeros(1, dtype=torch.long, device=device))


def compute_profile(snn) -> dict:
    """Operations of one denoising step (all T spiking steps) for one image.

    The timestep path (embedding MLP and its per-block projections) depends on t alone and is
    reported apart: it is a per-step constant that hardware would tabulate. Synaptic operations of
    layers fed by spikes are counted densely here (every synapse, as if every neuron fired every
    step); the energy report scales them by the firing rates. Layers fed by analog values count their
    MACs once per window when their input is the same at every step. Analog MACs and the FLOPs of
    analog non-synaptic ops make the analog share.
    """
    records = _blank_walk(snn)
    total = {role: sum(r.ops for r in records if r.role == role) for role in ROLES}
    analog_macs = total["input"] + total["analog"] + total["attention"]
    analog_layers = Counter(f"{'conv2d' if 'conv' in r.name else 'linear'} (analog input)" for r in records
                            if r.role in ("input", "analog"))
    everything = 2 * (total["spiking"] + analog_macs) + total["nonsynaptic"]
    return {
        "spiking_input_synaptic_ops_dense": total["spiking"],
        "input_layer_macs": total["input"],
        "analog_input_macs": total["analog"],
        "attention_macs": total["attention"],
        "analog_nonlinear_flops": total["nonsynaptic"],
        "timestep_path_macs": total["timestep"],
        "analog_share": round((2 * analog_macs + total["nonsynaptic"]) / everything, 4) if everything else 0.0,
        "analog_layers": dict(analog_layers),
    }


def site_compute_shares(snn) -> dict[str, float]:
    """Each spiking site's share of the dense spiking synaptic operations it feeds."""
    by_module: Counter = Counter()
    for r in _blank_walk(snn):
        for module, share in r.sources:
            by_module[module] += r.ops * share
    total = sum(by_module.values()) or 1.0
    return {site: by_module[path] / total for site, path in snn.summary.neurons.items()}


def spike_costs(snn) -> dict[str, float]:
    """Accumulates per spike of each spiking site: the synapses one spike reaches in the layers it feeds
    (a layer's MACs per step over its input values; a site feeding several layers sums them). Times a
    site's spike count, it is that site's share of the energy report's accumulates."""
    costs: Counter = Counter()
    for r in _blank_walk(snn):
        if r.role == "spiking" and r.inputs:
            for module, _ in r.sources:
                costs[module] += r.ops / snn.T / r.inputs
    return {site: costs[path] for site, path in snn.summary.neurons.items() if costs[path]}


