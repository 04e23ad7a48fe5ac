"""A diffusers UNet as a torch.fx graph whose activation call sites have stable names.

`torch.fx.symbolic_trace` cannot trace `UNet2DModel` (Python control flow); `torch.export` can. The
export is made with a dynamic batch, then its shape guards are dropped, so the graph runs at any
batch size (folding T spiking steps into the batch makes batches far larger than the example).
Calibration observes, and conversion replaces, the nodes this module names.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import fx

from sdm.errors import ConfigError, SDMError, reason

aten = torch.ops.aten

ACTIVATIONS = {
    aten.silu.default: "silu", aten.silu_.default: "silu",
    aten.relu.default: "relu", aten.relu_.default: "relu",
    aten.gelu.default: "gelu", aten.gelu_.default: "gelu",
}
# Layers with synapses: what a spike input turns from multiply-accumulates into accumulates.
SYNAPTIC = {aten.conv2d.default, aten.linear.default}
# Ops that move or copy values without computing: spikes stay spikes through them.
PASS_THROUGH = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.transpose.int, aten.permute.default,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.flatten.using_ints, aten.contiguous.default,
    aten.clone.default, aten.dropout.default, aten.pad.default, aten.constant_pad_nd.default,
    aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten.to.dtype, aten._to_copy.default,
    aten.alias.default, aten.detach.default,
}
# Export bookkeeping that pins shapes or dtypes to the example; meaningless once the batch is folded.
_GUARD_TARGETS = {aten._assert_tensor_metadata.default, aten.sym_constrain_range_for_size.default,
                  aten._assert_scalar.default}


ENCODER_OP = "identity"     # the op of a spike-encoder site: it passes its analog value on, as spikes
ENCODER_SUFFIX = ":input"   # a spike-encoder site's name: its layer's module path, this, and a count past the first


def is_encoder_site(name: str) -> bool:
    """Whether the site called `name` spike-encodes a synaptic layer's analog input (else an activation)."""
    return ENCODER_SUFFIX in name


@dataclass(frozen=True)
class ConversionSite:
    """One place that gets its own neuron and threshold: a call of an activation function, or the analog
    input of a synaptic layer (a spike encoder)."""

    name: str      # e.g. "down_blocks.0.resnets.0.nonlinearity#2": the module and which of its calls
    node: str      # the graph node's name
    op: str        # silu | relu | gelu, or ENCODER_OP

    @property
    def is_encoder(self) -> bool:
        return self.op == ENCODER_OP


# Exported graphs kept for reuse, by `_structure_key`: the most recent few, each holding its weights on the
# meta device (so that it keeps no model's memory alive) until it is bound to a model's own parameters.
_CAPTURES: OrderedDict[str, fx.GraphModule] = OrderedDict()
_CAPTURES_KEPT = 4


def capture(model: torch.nn.Module, example_batch: int = 2) -> fx.GraphModule:
    """Export `model(sample, timestep)` to a plain GraphModule that runs at any batch size, holding
    `model`'s own parameters (not copies).

    An export takes seconds for a small UNet and more for a large one, and one conversion workflow
    captures the same architecture many times (calibration, each conversion, each load). The graph
    depends on the model's structure only, not its weights, so captures are kept by that structure
    and bound to each model's parameters: the same graph, for the cost of a copy."""
    key = _structure_key(model, example_batch)
    if key in _CAPTURES:
        _CAPTURES.move_to_end(key)
        return _bound(_CAPTURES[key], model)
    module = _exported(model, example_batch)
    _CAPTURES[key] = _bound(module, model, to_meta=True)
    while len(_CAPTURES) > _CAPTURES_KEPT:
        _CAPTURES.popitem(last=False)
    return module


def _structure_key(model: torch.nn.Module, example_batch: int) -> str:
    """What decides the exported graph: the model's class and config; each module's type, settings
    (`extra_repr` and its plain attributes: heads, scales, flags such as gradient checkpointing), its
    attention processor and that processor's settings, its hooks and any forward replaced on the
    instance; and each tensor's name, shape, dtype and device."""
    parts: list = [type(model).__module__, type(model).__qualname__, example_batch,
                   json.dumps(dict(getattr(model, "config", {})), sort_keys=True, default=str)]
    for name, module in model.named_modules():
        processor = getattr(module, "processor", None)
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        parts.append((name, type(module).__module__, type(module).__qualname__, module.extra_repr(),
                      _plain_settings(module), type(processor).__qualname__, _plain_settings(processor),
                      [getattr(hook, "__qualname__", type(hook).__qualname__) for hook in hooks],
                      "forward" in vars(module)))
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts.append((name, tuple(tensor.shape), str(tensor.dtype), str(tensor.device), tensor.requires_grad))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _plain_settings(owner) -> list:
    """An object's attributes that are plain values (not its train/eval flag, which capture overrides)."""
    plain = (bool, int, float, str, type(None))
    return sorted((k, v) for k, v in getattr(owner, "__dict__", {}).items() if k != "training" and isinstance(v, plain))


def _bound(module: fx.GraphModule, model: torch.nn.Module, to_meta: bool = False) -> fx.GraphModule:
    """A copy of the captured `module` whose parameters and buffers are `model`'s own tensors of the same
    names (or, `to_meta`, stand-ins on the meta device that hold no memory). Tensors the export lifted
    out of the forward (constants such as a FIR kernel, held as buffers of the graph) are copied."""
    owned = dict([*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)])
    memo = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        source = owned.get(name)
        if source is None:
            continue
        if to_meta:
            meta = source.detach().to("meta")
            source = torch.nn.Parameter(meta, source.requires_grad) if isinstance(source, torch.nn.Parameter) else meta
        memo[id(tensor)] = source
    return copy.deepcopy(module, memo)


def _exported(model: torch.nn.Module, example_batch: int) -> fx.GraphModule:
    """`torch.export` of `model` with a dynamic batch, its shape guards dropped."""
    from torch.export import Dim

    size, channels = int(model.config.sample_size), int(model.config.in_channels)
    param = next(model.parameters())
    sample = torch.randn(example_batch, channels, size, size, device=param.device, dtype=param.dtype)
    timestep = torch.linspace(0, 999, example_batch, device=param.device).long()
    batch = Dim("batch", max=63)  # diffusers' Upsample2D branches on batch >= 64; the graph takes the other
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (sample, timestep), dynamic_shapes={"sample": {0: batch}, "timestep": {0: batch}})
    except Exception as err:  # export raises many internal types; the user needs the first line
        raise SDMError(f"torch.export could not capture {type(model).__name__} as a graph ({reason(err, 200)})") from None
    finally:
        model.train(was_training)
    exported = program.module()
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(exported.graph, values)
    graph.output(out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out)
    for node in list(graph.nodes):
        is_guard = node.op == "call_module" and node.target.startswith("_guards")
        if (is_guard or node.target in _GUARD_TARGETS) and not node.users:
            graph.erase_node(node)
    graph.lint()
    module = fx.GraphModule(exported, graph)
    module.delete_all_unused_submodules()
    return module


def _site_base(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name
    key = list(stack.keys())[-1]
    path = stack[key][0] if isinstance(stack[key], tuple) else key
    call = key.rsplit("@", 1)[1] if "@" in key else "0"
    return f"{path or 'model'}#{call}"


def sample_dependent(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the first input (the noisy image), not only on the timestep."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    dependent = {placeholders[0]}
    for node in graph.nodes:
        if node.op in ("call_function", "call_module", "call_method", "output"):
            if node.target is aten.sym_size.int:  # a shape, not a value of the image
                continue
            if any(i in dependent for i in node.all_input_nodes):
                dependent.add(node)
    return dependent


def activation_sites(module: fx.GraphModule) -> list[ConversionSite]:
    """Every activation call that acts on the image path, in graph order, with unique names.

    Activations of the timestep embedding depend on t alone; they stay analog (computed once per
    denoising step) and are not listed.
    """
    dependent = sample_dependent(module.graph)
    sites, seen = [], {}
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target in ACTIVATIONS and node in dependent:
            base = _site_base(node)
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}.{seen[base] - 1}"
            sites.append(ConversionSite(name, node.name, ACTIVATIONS[node.target]))
    return sites


def source_through_pass_through(node: fx.Node) -> fx.Node:
    """The node whose values `node` merely moves (through views, padding, nearest upsampling...)."""
    while node.op == "call_function" and node.target in PASS_THROUGH:
        node = node.args[0]
    return node


def moved_values(node: fx.Node) -> list[fx.Node]:
    """The nodes whose values `node` merely moves: through pass-through ops and one concatenation
    (a synaptic layer reads a spike tensor, an analog one, or a channel-wise cat of several)."""
    origin = source_through_pass_through(node)
    if origin.op == "call_function" and origin.target is aten.cat.default:
        return [source_through_pass_through(part) for part in origin.args[0]]
    return [origin]


def encoding_sites(module: fx.GraphModule) -> list[ConversionSite]:
    """Analog inputs of synaptic layers on the image path (op `ENCODER_OP`): where spike encoders go.

    The image itself stays analog (direct encoding, as in most SNNs); inputs that already come from
    activations are spikes after conversion.
    """
    dependent = sample_dependent(module.graph)
    sites, seen, done = [], {}, set()
    for node in module.graph.nodes:
        if node.op != "call_function" or node.target not in SYNAPTIC or node not in dependent:
            continue
        source = node.args[0]
        already_spikes = all(v.op == "call_function" and v.target in ACTIVATIONS for v in moved_values(source))
        if source in done or source_through_pass_through(source).op == "placeholder" or already_spikes:
            continue
        done.add(source)
        stack = node.meta.get("nn_module_stack") or {}
        base = f"{list(stack.values())[-1][0] if stack else node.name}{ENCODER_SUFFIX}"
        seen[base] = seen.get(base, 0) + 1
        sites.append(ConversionSite(base if seen[base] == 1 else f"{base}.{seen[base] - 1}", source.name, ENCODER_OP))
    return sites


def conversion_sites(module: fx.GraphModule, encode_analog: bool = False) -> list[ConversionSite]:
    """The sites that become neurons: every activation call, and with `encode_analog` every analog
    input of a synaptic layer."""
    return activation_sites(module) + (encoding_sites(module) if encode_analog else [])


def readout_sites(module: fx.GraphModule, sites: list[ConversionSite]) -> list[str]:
    """The sites whose outputs the last synaptic layer on the image path reads (the output layer)."""
    dependent = sample_dependent(module.graph)
    synaptic = [n for n in module.graph.nodes if n.op == "call_function" and n.target in SYNAPTIC and n in dependent]
    if not synaptic:
        return []
    by_node = {s.node: s.name for s in sites}
    return [by_node[v.name] for v in moved_values(synaptic[-1].args[0]) if v.name in by_node]


def timestep_activation_count(module: fx.GraphModule) -> int:
    """Activation calls that depend on the timestep alone (kept analog)."""
    dependent = sample_dependent(module.graph)
    return sum(1 for n in module.graph.nodes if n.op == "call_function" and n.target in ACTIVATIONS and n not in dependent)


def architecture_fingerprint(model_config: dict) -> str:
    """A short hash of the architecture (its config, not its weights): files made for another
    architecture are refused. (Sample shards key on the weights: `sdm.diffusion.shards.weights_fingerprint`.)"""
    keys = {k: v for k, v in dict(model_config).items() if not k.startswith("_")}
    blob = json.dumps(keys, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_sites(found: list[str], expected: list[str], what: str) -> None:
    """Refuse statistics or thresholds whose call sites are not this model's."""
    missing, unknown = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unknown:
        example = (missing or unknown)[0]
        raise SDMError(
            f"{what} belong to another model: {len(missing)} of this model's activation sites are missing and "
            f"{len(unknown)} are unknown (e.g. '{example}'); recalibrate on this model"
        )


def match_sites(patterns: list[str], names: list[str], setting: str = "analog_sites") -> list[str]:
    """Site names matched by shell-style `patterns`; a pattern that matches nothing is an error."""
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(setting, f"pattern '{pattern}' matches no site (they are named like "
                              f"'{names[0]}'; sdm-convert's report.json lists them all)")
        chosen += [n for n in hits if n not in chosen]
    return chosen
