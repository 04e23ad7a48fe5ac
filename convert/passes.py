"""The graph pass: an exported ANN graph -> the same graph run over T spiking steps.

Every node on the image path becomes a sequence node ([T*B, ...], T folded into the batch):
activation calls become neurons (one per call site, so no membrane state is shared between sites),
foldable ops run unchanged, non-linear analog ops are fed running means, and tensors of the
timestep path (which depend on t alone) are computed once and repeated over the T steps where
they meet the image path. The input is presented at every step; the output is the window value
(the T-step mean in the rate code, the weighted sum in the weighted code: `sdm.snn.coding`).

Synaptic layers whose input is analog and changes from step to step (shortcuts, down- and
upsamplers reading the residual stream, which sums spiking branches) would multiply at every step.
In window mode every consumer of their output is window-synchronous or linear, and a linear layer
commutes with the window value, so they run once per window on the accumulated (mean) input: the
same outputs for one T-th of the multiplications. In running mode they stay per step.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from calibration.config import ConversionConfig
from calibration.graph import (
    ACTIVATIONS,
    SYNAPTIC,
    ConversionSite,
    moved_values,
    sample_dependent,
    timestep_activation_count,
)
from convert.ops import RUNNING_MEAN, is_foldable, touches_batch_dim
from sdm.errors import ConfigError, SDMError
from sdm.snn.neurons import SpikingNeuron
from sdm.snn.temporal import RepeatTime, SpikingActivation, TemporalMean, WindowValue

aten = torch.ops.aten


class UnsupportedOpError(SDMError):
    """An op on the image path whose behaviour over spiking steps is unknown."""


@dataclass
class ConversionSummary:
    neurons: dict[str, str] = field(default_factory=dict)        # call site -> neuron module
    analog_ops: Counter = field(default_factory=Counter)          # running-mean ops by type
    analog_sites: list[str] = field(default_factory=list)         # activation sites kept analog
    timestep_activations: int = 0                                 # analog, once per denoising step
    # Synaptic layers reading analog values that change over the steps: run once per window on the
    # accumulated input (window mode), or multiplying at every step (running mode).
    window_accumulated: list[str] = field(default_factory=list)
    per_step_analog: list[str] = field(default_factory=list)




def unchanged(x: torch.Tensor) -> torch.Tensor:
    """What an encoder site computes in the ANN: nothing (it only marks where spikes start)."""
    return x


def module_key(site: str) -> str:
    return site.replace(".", "_").replace("#", "__call")


def _has_batch_dim(node: fx.Node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(value.shape[0], torch.SymInt)


def layer_name(node: fx.Node) -> str:
    """The module a graph node belongs to (the node's own name outside any module)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else node.name


def _where(node: fx.Node) -> str:
    path = layer_name(node)
    return f"node '{node.name}'" + (f" in module '{path}'" if path != node.name else "")


def _feeding(data: fx.Node, value: fx.Node, otherwise: Callable[[fx.Node], fx.Node]) -> Callable:
    """The argument map of a copied layer that reads `value` in place of its input `data`."""
    return lambda n: value if n is data else otherwise(n)


def spiking_graph(
    captured: fx.GraphModule,
    sites: list[ConversionSite],
    make_neuron: Callable[[ConversionSite], SpikingNeuron],
    config: ConversionConfig,
    analog_sites: frozenset[str],
) -> tuple[fx.GraphModule, ConversionSummary]:
    """Rewrite `captured` (from `calibration.graph.capture`) in place of its own graph; returns the new module.

    `config` (checked) gives the spike code, the analog mode and the transfer of smooth activations ('function' or
    'neuron', see `sdm.snn.temporal.SpikingActivation`); the sites named in `analog_sites` (the config's
    patterns resolved, and the readout) stay analog.
    """
    code, analog_mode, activation = config.code, config.analog_mode, config.activation
    if not sites:
        raise SDMError("the model has no activation call sites on its image path: nothing to convert")
    dependent = sample_dependent(captured.graph)
    site_of = {s.node: s for s in sites if not s.is_encoder}
    encoder_of = {s.node: s for s in sites if s.is_encoder}
    encoded: dict[fx.Node, fx.Node] = {}
    summary = ConversionSummary(timestep_activations=timestep_activation_count(captured))
    captured.add_submodule("repeat_time", RepeatTime(code))
    captured.add_submodule("window_value", WindowValue(code))
    captured.add_submodule("neurons", nn.ModuleDict())
    captured.add_submodule("analog", nn.ModuleDict())

    def place(site: ConversionSite, function: Callable, transfer: str) -> str:
        """Register the site's `SpikingActivation` (analog when the user keeps it so); its module path."""
        key = module_key(site.name)
        if site.name in analog_sites:
            transfer = "analog"
            summary.analog_sites.append(site.name)
        captured.neurons[key] = SpikingActivation(make_neuron(site), code, function, analog_mode, transfer)
        summary.neurons[site.name] = f"neurons.{key}"
        return f"neurons.{key}"

    graph = fx.Graph()
    static: dict[fx.Node, fx.Node] = {}
    sequence: dict[fx.Node, fx.Node] = {}
    repeated: dict[fx.Node, fx.Node] = {}
    varying: set[fx.Node] = set()  # sequence values that differ from step to step (spikes and their sums)
    spikes: set[fx.Node] = set()   # sequence values that are spikes (what synaptic layers accumulate)
    placeholders = [n for n in captured.graph.nodes if n.op == "placeholder"]

    def as_sequence(n: fx.Node) -> fx.Node:
        """The value of `n` as seen by a sequence op."""
        if n in sequence:
            return sequence[n]
        if n.target is aten.sym_size.int and n.args[0] in sequence and n.args[1] == 0:
            if n not in repeated:
                repeated[n] = graph.call_function(aten.sym_size.int, (sequence[n.args[0]], 0))
            return repeated[n]
        if _has_batch_dim(n):
            if n not in repeated:
                repeated[n] = graph.call_module("repeat_time", (static[n],))
            return repeated[n]
        return static[n]

    for node in captured.graph.nodes:
        if node.op == "placeholder":
            static[node] = graph.placeholder(node.name)
            static[node].meta = dict(node.meta)
            if node is placeholders[0]:
                sequence[node] = graph.call_module("repeat_time", (static[node],))
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise SDMError("the model must return a single tensor")
            graph.output(graph.call_module("window_value", (as_sequence(out),)) if out in dependent else static[out])
            continue
        if node not in dependent:
            static[node] = graph.node_copy(node, lambda n: static[n])
            continue
        positions = {i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in dependent}
        if node.target in ACTIVATIONS:
            site = site_of[node.name]
            if len(node.args) > 1:
                raise UnsupportedOpError(f"{node.target} at {_where(node)} has extra positional arguments")
            transfer = "neuron" if site.op == "relu" else activation
            target = place(site, functools.partial(node.target, **node.kwargs), transfer)
            sequence[node] = graph.call_module(target, (as_sequence(node.args[0]),))
            if site.name not in analog_sites:
                spikes.add(node)
            if node in spikes or analog_mode == "running":  # a window-mode analog site outputs its mean's value
                varying.add(node)
        elif touches_batch_dim(node):
            raise UnsupportedOpError(f"{node.target} at {_where(node)} works along the batch dimension, "
                                     "where spiking steps are folded; it cannot be converted")
        elif node.target in SYNAPTIC and node.args[0] in encoded:  # reads the encoder's spikes
            sequence[node] = graph.node_copy(node, _feeding(node.args[0], encoded[node.args[0]], as_sequence))
            varying.add(node)
        elif node.target in SYNAPTIC and node.args[0] in varying and not set(moved_values(node.args[0])) <= spikes:
            if analog_mode == "window":  # once per window, on the accumulated input
                mean = graph.call_module("window_value", (as_sequence(node.args[0]),))
                window = graph.node_copy(node, _feeding(node.args[0], mean, as_sequence))
                sequence[node] = graph.call_module("repeat_time", (window,))
                summary.window_accumulated.append(layer_name(node))
            else:
                sequence[node] = graph.node_copy(node, as_sequence)
                summary.per_step_analog.append(layer_name(node))
                varying.add(node)
        elif is_foldable(node, len(positions), positions):
            sequence[node] = graph.node_copy(node, as_sequence)
            if any(a in varying for a in node.all_input_nodes):
                varying.add(node)
        elif node.target in RUNNING_MEAN:
            if any(isinstance(v, fx.Node) and v in dependent for v in node.kwargs.values()):
                raise UnsupportedOpError(f"{node.target} at {_where(node)} takes a step-varying keyword argument")
            name = f"{len(captured.analog)}_{node.target.__name__.split('.')[0]}"
            captured.analog[name] = TemporalMean(node.target, tuple(sorted(positions)), code, analog_mode,
                                                  name=_where(node))
            summary.analog_ops[node.target.__name__.split(".")[0]] += 1
            args = tuple(as_sequence(a) if isinstance(a, fx.Node) else a for a in node.args)
            kwargs = {k: static[v] if isinstance(v, fx.Node) else v for k, v in node.kwargs.items()}
            sequence[node] = graph.call_module(f"analog.{name}", args, kwargs)
            if analog_mode == "running":
                varying.add(node)
        else:
            raise UnsupportedOpError(
                f"unsupported op {node.target} at {_where(node)}: its meaning over spiking steps is unknown; "
                "supported ops are listed in convert/ops.py"
            )
        if node.name in encoder_of and node in sequence:  # a spike encoder for the synaptic layers it feeds
            encoded[node] = graph.call_module(place(encoder_of[node.name], unchanged, "neuron"), (sequence[node],))
    graph.lint()
    if len(summary.analog_sites) == len(summary.neurons):
        raise ConfigError("analog_sites", "keeps every site analog: the pass converted no activation, nothing on the "
                          "image path became a spiking neuron; narrow it")
    return fx.GraphModule(captured, graph), summary
