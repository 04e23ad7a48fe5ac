"""prepare -> calibrate, the first two steps of PyTorch FX quantization's workflow, for SNN thresholds.

    observed = prepare(unet, ConversionConfig(T=4))   # an observer after every activation *call site*
    calibrate(observed, (x_t, t))                     # run calibration inputs through it
    stats = observed.stats()                          # CalibrationStats: save(), thresholds()

The third step, `convert.convert(observed)`, lives in `convert/` and reads the config given here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from calibration.config import ConversionConfig
from calibration.graph import (
    ConversionSite,
    architecture_fingerprint,
    capture,
    check_sites,
    conversion_sites,
    match_sites,
)
from calibration.observer import ActivationObserver
from calibration.statistics import CalibrationStats
from sdm.errors import SDMError
from sdm.snn.neurons import SpikingNeuron


class ObservedModel(nn.Module):
    """The model's graph with an `ActivationObserver` after every activation call on the image path."""

    def __init__(self, model: nn.Module, graph: fx.GraphModule, sites: list[ConversionSite], config: ConversionConfig):
        super().__init__()
        self.graph, self.sites, self.config = graph, sites, config
        self.model_config = dict(model.config)
        self.model = [model]  # the float model, kept out of the module tree so it is not saved twice
        self.batches = 0

    @property
    def fingerprint(self) -> str:
        return architecture_fingerprint(self.model_config)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        return self.graph(sample, timestep)

    def observers(self) -> dict[str, ActivationObserver]:
        return {m.name: m for m in self.graph.modules() if isinstance(m, ActivationObserver)}

    def stats(self, source: dict | None = None) -> CalibrationStats:
        if self.batches == 0:
            raise SDMError("no calibration inputs were run through the observed model; call calibrate() first")
        return CalibrationStats(self.fingerprint, {n: o.summary() for n, o in self.observers().items()}, self.config,
                                source or {})


def require_ann(model: nn.Module, name: str = "the model") -> None:
    """Conversion starts from an ANN: a model with spiking neurons (trained or converted) spikes already."""
    if any(isinstance(m, SpikingNeuron) for m in model.modules()):
        raise SDMError(f"{name} is already a spiking model ({type(model).__name__}); calibrate and convert the ANN "
                       "(a UNet2DModel) instead")


def prepare(model: nn.Module, config: ConversionConfig | None = None) -> ObservedModel:
    """Capture `model` as a graph and insert an observer after each activation call site (and, where
    `config` spike-encodes analog inputs, after each analog input of a synaptic layer). `config` (the
    defaults when None) is recorded for `calibrate` and `convert`."""
    config = config or ConversionConfig()
    config.validate()
    require_ann(model)
    graph = capture(model)
    sites = conversion_sites(graph, config.encodes)
    if not any(not site.is_encoder for site in sites):
        raise SDMError(f"{type(model).__name__} has no ReLU, SiLU or GELU on its image path: nothing to convert")
    # The config's site patterns must name sites of this model: checked now, before any calibration work.
    match_sites(list(config.analog_sites), [s.name for s in sites if not s.is_encoder], "analog_sites")
    match_sites(list(config.encode_sites), [s.name for s in sites if s.is_encoder], "encode_sites")
    by_node = {s.node: s for s in sites}
    for index, node in enumerate(list(graph.graph.nodes)):
        site = by_node.get(node.name)
        if site is None:
            continue
        attr = f"observer_{index}"
        graph.add_submodule(attr, ActivationObserver(site.name, site.op, config.per_channel, seed=index))
        with graph.graph.inserting_after(node):
            observed = graph.graph.call_module(attr, (node,))
        node.replace_all_uses_with(observed, delete_user_cb=lambda user, o=observed: user is not o)
    graph.recompile()
    return ObservedModel(model, graph, sites, config)


@torch.no_grad()
def calibrate(observed: ObservedModel, pairs: tuple[torch.Tensor, torch.Tensor], batch_size: int = 64,
              progress: bool = True) -> ObservedModel:
    """Run calibration pairs (x_t, t) through the observed model."""
    x, t = pairs
    if len(x) != len(t) or len(x) == 0:
        raise SDMError(f"calibration needs matching, non-empty x_t and t (got {len(x)} and {len(t)})")
    if not torch.isfinite(x).all():
        raise SDMError("calibration inputs contain NaN or inf")
    device = next(observed.model[0].parameters()).device
    for i in tqdm(range(0, len(x), batch_size), total=math.ceil(len(x) / batch_size), desc="calibrating",
                  disable=not progress):
        observed(x[i : i + batch_size].to(device), t[i : i + batch_size].to(device))
    return observed


def load_stats(path: str | Path, model: nn.Module) -> CalibrationStats:
    """Statistics from `path`, checked against `model`'s architecture and call sites."""
    loaded = CalibrationStats.load(path, architecture_fingerprint(dict(model.config)))
    graph = capture(model)
    check_sites(list(loaded.sites), [s.name for s in conversion_sites(graph, loaded.encoders_observed)],
                f"statistics in '{path}'")
    return loaded
