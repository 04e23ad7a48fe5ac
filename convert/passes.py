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
    if not sites:
        raise SDMError("the model has no activation call sites on its image path: nothing to convert")
    return _SpikingPass(captured, sites, make_neuron, config, analog_sites).run()


class _SpikingPass:
    """One walk of the captured graph, each node dispatched by its kind (`_kind`) to its handler, as
    PyTorch FX's convert dispatches per node kind. The state: each node's value in the new graph, static
    (computed once, timestep path) or a sequence (T steps folded into the batch), and which sequence
    values vary over the steps (`varying`) and which are spikes (`spikes`, what synapses accumulate)."""

    def __init__(self, captured: fx.GraphModule, sites: list[ConversionSite],
                 make_neuron: Callable[[ConversionSite], SpikingNeuron], config: ConversionConfig,
                 analog_sites: frozenset[str]):
        self.captured, self.make_neuron, self.config, self.analog_sites = captured, make_neuron, config, analog_sites
        self.dependent = sample_dependent(captured.graph)
        self.site_of = {s.node: s for s in sites if not s.is_encoder}
        self.encoder_of = {s.node: s for s in sites if s.is_encoder}
        self.summary = ConversionSummary(timestep_activations=timestep_activation_count(captured))
        for name, module in (("repeat_time", RepeatTime(config.code)), ("window_value", WindowValue(config.code)),
                             ("neurons", nn.ModuleDict()), ("analog", nn.ModuleDict())):
            captured.add_submodule(name, module)
        self.graph = fx.Graph()
        self.static: dict[fx.Node, fx.Node] = {}
        self.sequence: dict[fx.Node, fx.Node] = {}
        self.repeated: dict[fx.Node, fx.Node] = {}
        self.encoded: dict[fx.Node, fx.Node] = {}  # an encoder site's value -> its spikes
        self.varying: set[fx.Node] = set()
        self.spikes: set[fx.Node] = set()
        self.first_input = next(n for n in captured.graph.nodes if n.op == "placeholder")

    def run(self) -> tuple[fx.GraphModule, ConversionSummary]:
        for node in self.captured.graph.nodes:
            _HANDLERS[self._kind(node)](self, node)
            if node.name in self.encoder_of and node in self.sequence:  # a spike encoder for the layers it feeds
                target = self.place(self.encoder_of[node.name], unchanged, "neuron")
                self.encoded[node] = self.graph.call_module(target, (self.sequence[node],))
        self.graph.lint()
        if len(self.summary.analog_sites) == len(self.summary.neurons):
            raise ConfigError("analog_sites", "keeps every site analog: the pass converted no activation, nothing on "
                              "the image path became a spiking neuron; narrow it")
        return fx.GraphModule(self.captured, self.graph), self.summary

    def _kind(self, node: fx.Node) -> str:
        if node.op in ("placeholder", "output"):
            return node.op
        if node not in self.dependent:
            return "timestep path"
        if node.target in ACTIVATIONS:
            return "activation"
        if touches_batch_dim(node):
            return "batch op"
        if node.target in SYNAPTIC and node.args[0] in self.encoded:
            return "synaptic on encoded spikes"
        if node.target in SYNAPTIC and node.args[0] in self.varying and not set(moved_values(node.args[0])) <= self.spikes:
            return "synaptic on a varying analog input"
        positions = self._positions(node)
        if is_foldable(node, len(positions), positions):
            return "foldable"
        return "running mean" if node.target in RUNNING_MEAN else "unsupported"

    def _positions(self, node: fx.Node) -> set[int]:
        """The argument positions that carry image-path values."""
        return {i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in self.dependent}

    def place(self, site: ConversionSite, function: Callable, transfer: str) -> str:
        """Register the site's `SpikingActivation` (analog when the user keeps it so); its module path."""
        key = module_key(site.name)
        if site.name in self.analog_sites:
            transfer = "analog"
            self.summary.analog_sites.append(site.name)
        self.captured.neurons[key] = SpikingActivation(self.make_neuron(site), self.config.code, function,
                                                       self.config.analog_mode, transfer)
        self.summary.neurons[site.name] = f"neurons.{key}"
        return f"neurons.{key}"

    def as_sequence(self, n: fx.Node) -> fx.Node:
        """The value of `n` as seen by a sequence op."""
        if n in self.sequence:
            return self.sequence[n]
        if n.target is aten.sym_size.int and n.args[0] in self.sequence and n.args[1] == 0:
            if n not in self.repeated:
                self.repeated[n] = self.graph.call_function(aten.sym_size.int, (self.sequence[n.args[0]], 0))
            return self.repeated[n]
        if _has_batch_dim(n):
            if n not in self.repeated:
                self.repeated[n] = self.graph.call_module("repeat_time", (self.static[n],))
            return self.repeated[n]
        return self.static[n]

    def on_placeholder(self, node: fx.Node) -> None:
        self.static[node] = self.graph.placeholder(node.name)
        self.static[node].meta = dict(node.meta)
        if node is self.first_input:  # the image, presented at every step
            self.sequence[node] = self.graph.call_module("repeat_time", (self.static[node],))

    def on_output(self, node: fx.Node) -> None:
        out = node.args[0]
        if not isinstance(out, fx.Node):
            raise SDMError("the model must return a single tensor")
        self.graph.output(self.graph.call_module("window_value", (self.as_sequence(out),)) if out in self.dependent
                          else self.static[out])

    def on_timestep_path(self, node: fx.Node) -> None:
        self.static[node] = self.graph.node_copy(node, lambda n: self.static[n])

    def on_activation(self, node: fx.Node) -> None:
        site = self.site_of[node.name]
        if len(node.args) > 1:
            raise UnsupportedOpError(f"{node.target} at {_where(node)} has extra positional arguments")
        transfer = "neuron" if site.op == "relu" else self.config.activation
        target = self.place(site, functools.partial(node.target, **node.kwargs), transfer)
        self.sequence[node] = self.graph.call_module(target, (self.as_sequence(node.args[0]),))
        if site.name not in self.analog_sites:
            self.spikes.add(node)
        if node in self.spikes or self.config.analog_mode == "running":  # a window-mode analog site outputs its mean's value
            self.varying.add(node)

    def on_batch_op(self, node: fx.Node) -> None:
        raise UnsupportedOpError(f"{node.target} at {_where(node)} works along the batch dimension, "
                                 "where spiking steps are folded; it cannot be converted")

    def on_synaptic_on_encoded_spikes(self, node: fx.Node) -> None:
        data = node.args[0]
        self.sequence[node] = self.graph.node_copy(node, _feeding(data, self.encoded[data], self.as_sequence))
        self.varying.add(node)

    def on_synaptic_on_a_varying_analog_input(self, node: fx.Node) -> None:
        if self.config.analog_mode == "window":  # once per window, on the accumulated input
            mean = self.graph.call_module("window_value", (self.as_sequence(node.args[0]),))
            window = self.graph.node_copy(node, _feeding(node.args[0], mean, self.as_sequence))
            self.sequence[node] = self.graph.call_module("repeat_time", (window,))
            self.summary.window_accumulated.append(layer_name(node))
        else:
            self.sequence[node] = self.graph.node_copy(node, self.as_sequence)
            self.summary.per_step_analog.append(layer_name(node))
            self.varying.add(node)

    def on_foldable(self, node: fx.Node) -> None:
        self.sequence[node] = self.graph.node_copy(node, self.as_sequence)
        if any(a in self.varying for a in node.all_input_nodes):
            self.varying.add(node)

    def on_running_mean(self, node: fx.Node) -> None:
        if any(isinstance(v, fx.Node) and v in self.dependent for v in node.kwargs.values()):
            raise UnsupportedOpError(f"{node.target} at {_where(node)} takes a step-varying keyword argument")
        kind = node.target.__name__.split(".")[0]
        name = f"{len(self.captured.analog)}_{kind}"
        self.captured.analog[name] = TemporalMean(node.target, tuple(sorted(self._positions(node))), self.config.code,
                                                  self.config.analog_mode, name=_where(node))
        self.summary.analog_ops[kind] += 1
        args = tuple(self.as_sequence(a) if isinstance(a, fx.Node) else a for a in node.args)
        kwargs = {k: self.static[v] if isinstance(v, fx.Node) else v for k, v in node.kwargs.items()}
        self.sequence[node] = self.graph.call_module(f"analog.{name}", args, kwargs)
        if self.config.analog_mode == "running":
            self.varying.add(node)

    def on_unsupported(self, node: fx.Node) -> None:
        raise UnsupportedOpError(f"unsupported op {node.target} at {_where(node)}: its meaning over spiking steps is "
                                 "unknown; supported ops are listed in convert/ops.py")


_HANDLERS = {kind: getattr(_SpikingPass, "on_" + kind.replace(" ", "_")) for kind in (
    "placeholder", "output", "timestep path", "activation", "batch op", "synaptic on encoded spikes",
    "synaptic on a varying analog input", "foldable", "running mean", "unsupported")}
