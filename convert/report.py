"""What a conversion is judged by: noise-prediction fidelity on probe inputs, activity, and which
part of the compute stays analog."""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx

from sdm.graph import sample_dependent
from sdm.neurons import spiking_neurons

aten = torch.ops.aten

# Ops that move or copy values without computing: spikes stay spikes through them.
_PASS_THROUGH = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.transpose.int, aten.permute.default,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.flatten.using_ints, aten.contiguous.default,
    aten.clone.default, aten.dropout.default, aten.pad.default, aten.constant_pad_nd.default,
    aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten.to.dtype, aten._to_copy.default,
    aten.alias.default, aten.detach.default,
}


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
    while node.op == "call_function" and node.target in _PASS_THROUGH:
        node = node.args[0]
    if node.op == "call_function" and node.target is aten.cat.default:
        return all(_carries_spikes(n, neuron_targets) for n in node.args[0])
    return node.op == "call_module" and node.target in neuron_targets


class _Shapes(fx.Interpreter):
    """Runs the graph once and keeps every tensor result's shape."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.shapes: dict[fx.Node, tuple] = {}

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            self.shapes[node] = tuple(result.shape)
        return result


@torch.no_grad()
def compute_profile(snn: torch.nn.Module) -> dict:
    """Operations of one denoising step (all T spiking steps) for one image.

    The timestep path (embedding MLP and its per-block projections) depends on t alone and is
    reported apart: it is a per-step constant that hardware would tabulate.

    Synaptic operations of layers fed by spikes are counted densely (every synapse, as if every
    neuron fired every step: an upper bound; `firing_rate` scales it to what spikes cost). MACs of
    layers fed by analog values, and the FLOPs of analog non-linear ops, make the analog share.
    """
    T, size, channels = snn.T, snn.config.sample_size, snn.config.in_channels
    executor = snn.executor
    snn.set_executor("steps")  # count on the step-by-step graph, whose shapes carry the T steps
    graph_module = snn.graph
    device = next(snn.parameters()).device
    interpreter = _Shapes(graph_module)
    snn.reset_state()
    interpreter.run(torch.zeros(1, channels, size, size, device=device), torch.zeros(1, dtype=torch.long, device=device))
    shapes = interpreter.shapes

    def numel(node: fx.Node) -> int:
        return math.prod(shapes.get(node, (0,)))
    neuron_targets = set(snn.summary.neurons.values())
    image_path = sample_dependent(graph_module.graph)
    modules = dict(graph_module.named_modules())
    spiking_macs = analog_macs = nonlinear_flops = timestep_macs = 0
    analog_layers: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target in (aten.conv2d.default, aten.linear.default):
            fan_in = math.prod(shapes[node.args[1]][1:])
            macs = numel(node) * fan_in  # over the folded T*1 batch
            if node not in image_path:  # the timestep path: computed once per denoising step
                timestep_macs += macs
            elif _carries_spikes(node.args[0], neuron_targets):
                spiking_macs += macs
            else:
                analog_macs += macs
                analog_layers[f"{node.target.__name__.split('.')[0]} (analog input)"] += 1
        elif node.op == "call_module" and node.target.startswith("analog."):
            op = modules[node.target]
            runs = 1 if op.mode == "window" else T
            out = numel(node) // T
            if "scaled_dot_product_attention" in node.target:
                q, k = shapes[node.args[0]], shapes[node.args[1]]
                flops = 4 * math.prod(q[1:]) * k[-2] + 5 * math.prod(q[1:-1]) * k[-2]
            else:
                flops = 8 * out
            nonlinear_flops += flops * runs
        elif node.op == "call_module" and node.target in neuron_targets and modules[node.target].activation is not None:
            runs = 1 if modules[node.target].mode == "window" else T
            nonlinear_flops += 4 * (numel(node) // T) * runs
    snn.set_executor(executor)
    total = 2 * (spiking_macs + analog_macs) + nonlinear_flops
    return {
        "spiking_input_synaptic_ops_dense": spiking_macs,
        "analog_input_macs": analog_macs,
        "analog_nonlinear_flops": nonlinear_flops,
        "timestep_path_macs": timestep_macs,
        "analog_share": round((2 * analog_macs + nonlinear_flops) / total, 4) if total else 0.0,
        "analog_layers": dict(analog_layers),
    }
