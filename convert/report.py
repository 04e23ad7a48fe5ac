"""What a conversion is judged by: noise-prediction fidelity on probe inputs, activity, and which
part of the compute stays analog."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from sdm.energy import LayerActivity
from sdm.graph import sample_dependent, source_through_pass_through
from sdm.neurons import spiking_neurons

aten = torch.ops.aten

@torch.no_grad()
def eps_fidelity(ann: torch.nn.Module, snn: torch.nn.Module, probes: tuple[torch.Tensor, ...],
                 batch_size: int = 32) -> dict:
    """SNN against ANN noise predictions on probe pairs, and the SNN's firing rate there.

    `probes` is (x_t, t, spread) from `calibration.probe_pairs`: the overall figures use the pairs
    spread evenly over t, the t < 100 figure every probe below t = 100.
    """
    x, t, spread = probes
    device = next(ann.parameters()).device
    neurons = spiking_neurons(snn)
    for n in neurons:
        n.reset_stats()
        n.record = True
    cosines, errors, refs = [], [], []
    try:
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size].to(device), t[i : i + batch_size].to(device)
            a = ann(xb, tb, return_dict=False)[0].flatten(1).double()
            s = snn(xb, tb, return_dict=False)[0].flatten(1).double()
            cosines.append(F.cosine_similarity(s, a, dim=1).cpu())
            errors.append((s - a).pow(2).sum(1).cpu())
            refs.append(a.pow(2).sum(1).cpu())
    finally:
        for n in neurons:
            n.record = False
    cos, err, ref = torch.cat(cosines), torch.cat(errors), torch.cat(refs)
    low = t < 100
    spikes = sum(n.spike_count for n in neurons)
    steps = sum(n.neuron_steps for n in neurons)
    return {
        "eps_cosine": round(cos[spread].mean().item(), 5),
        "eps_rel_mse": round((err[spread].sum() / ref[spread].sum()).item(), 6),
        "eps_cosine_t_lt_100": round(cos[low].mean().item(), 5) if low.any() else None,
        "eps_rel_mse_t_lt_100": round((err[low].sum() / ref[low].sum()).item(), 6) if low.any() else None,
        "probes": {"spread_over_t": int(spread.sum()), "t_lt_100": int(low.sum())},
        "firing_rate": round(spikes / steps, 5) if steps else 0.0,
    }


def _carries_spikes(node: fx.Node, neuron_targets: set[str]) -> bool:
    node = source_through_pass_through(node)
    if node.op == "call_function" and node.target is aten.cat.default:
        return all(_carries_spikes(n, neuron_targets) for n in node.args[0])
    return node.op == "call_module" and node.target in neuron_targets


@dataclass
class _OpRecord:
    """What one walk through the graph learnt about one op, per image, summed over the T steps."""

    name: str
    kind: str          # spiking | analog | timestep (synaptic layers) or nonlinear (analog ops)
    ops: float         # dense MACs of synaptic layers, FLOPs of non-linear analog ops
    input_rate: float  # fraction of non-zero inputs (synaptic layers)


class _Walk(fx.Interpreter):
    """Runs the step-by-step graph once and records every synaptic layer and analog op."""

    def __init__(self, snn, batch: int):
        super().__init__(snn.graph)
        self.T, self.batch = snn.T, batch
        self.neurons = set(snn.summary.neurons.values())
        self.image_path = sample_dependent(snn.graph.graph)
        self.modules = dict(snn.graph.named_modules())
        self.records: list[_OpRecord] = []

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if node.op == "call_function" and node.target in (aten.conv2d.default, aten.linear.default):
            x, weight = self.env[node.args[0]], self.env[node.args[1]]
            macs = result.numel() * weight[0].numel() / self.batch
            kind = ("timestep" if node not in self.image_path
                    else "spiking" if _carries_spikes(node.args[0], self.neurons) else "analog")
            rate = float((x != 0).float().mean()) if x.numel() else 0.0
            self.records.append(_OpRecord(_label(node), kind, macs, rate))
        elif node.op == "call_module" and (node.target.startswith("analog.") or node.target in self.neurons):
            module = self.modules[node.target]
            runs = 1 if module.mode == "window" else self.T
            if node.target in self.neurons:
                flops = 0 if module.activation is None else 4 * result.numel() / self.T / self.batch * runs
            elif "scaled_dot_product_attention" in node.target:
                q, k = self.env[node.args[0]].shape, self.env[node.args[1]].shape
                flops = (4 * math.prod(q[1:]) * k[-2] + 5 * math.prod(q[1:-1]) * k[-2]) * runs
            else:
                flops = 8 * result.numel() / self.T / self.batch * runs
            if flops:
                self.records.append(_OpRecord(getattr(module, "name", "") or node.target, "nonlinear", flops, 0.0))
        return result


def _label(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else node.name


@torch.no_grad()
def walk(snn, sample: torch.Tensor, timestep: torch.Tensor) -> list[_OpRecord]:
    """Records of one step-by-step forward pass of `snn` on (sample, timestep)."""
    executor = snn.executor
    snn.set_executor("steps")  # account on the step-by-step graph, whose tensors carry the T steps
    try:
        snn.reset_state()
        interpreter = _Walk(snn, sample.shape[0])
        interpreter.run(sample, timestep.expand(sample.shape[0]) if timestep.dim() == 0 else timestep)
        return interpreter.records
    finally:
        snn.set_executor(executor)


def layer_activity(snn, sample: torch.Tensor, timestep: torch.Tensor) -> list[LayerActivity]:
    """Synaptic layers (and attention products, analog) for `sdm.energy.energy_report`."""
    return [LayerActivity(r.name, r.kind == "spiking", r.ops, r.input_rate) for r in walk(snn, sample, timestep)
            if r.kind != "nonlinear" or "attention" in r.name]


def compute_profile(snn) -> dict:
    """Operations of one denoising step (all T spiking steps) for one image.

    The timestep path (embedding MLP and its per-block projections) depends on t alone and is
    reported apart: it is a per-step constant that hardware would tabulate. Synaptic operations of
    layers fed by spikes are counted densely here (every synapse, as if every neuron fired every
    step); the energy report scales them by the firing rates. MACs of layers fed by analog values,
    and the FLOPs of analog non-linear ops, make the analog share.
    """
    device = next(snn.parameters()).device
    size, channels = snn.config.sample_size, snn.config.in_channels
    records = walk(snn, torch.zeros(1, channels, size, size, device=device), torch.zeros(1, dtype=torch.long, device=device))
    total = {kind: sum(r.ops for r in records if r.kind == kind) for kind in ("spiking", "analog", "timestep", "nonlinear")}
    analog_layers = Counter(f"{'conv2d' if 'conv' in r.name else 'linear'} (analog input)" for r in records
                            if r.kind == "analog")
    everything = 2 * (total["spiking"] + total["analog"]) + total["nonlinear"]
    return {
        "spiking_input_synaptic_ops_dense": total["spiking"],
        "analog_input_macs": total["analog"],
        "analog_nonlinear_flops": total["nonlinear"],
        "timestep_path_macs": total["timestep"],
        "analog_share": round((2 * total["analog"] + total["nonlinear"]) / everything, 4) if everything else 0.0,
        "analog_layers": dict(analog_layers),
    }
