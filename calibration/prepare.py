"""prepare -> calibrate, the first two steps of PyTorch FX quantization's workflow, for SNN thresholds.

    observed = prepare(unet)                 # an observer after every activation *call site*
    calibrate(observed, (x_t, t))            # run calibration inputs through it
    stats = observed.stats()                 # CalibrationStats: save(), thresholds(rule, T)

The third step, `convert.convert(observed, T=...)`, lives in `convert/`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from calibration import stats as files
from calibration.observer import ActivationObserver
from calibration.rules import site_thresholds
from sdm.errors import SDMError
from sdm.graph import ActivationSite, capture, conversion_sites
from sdm.neurons import SpikingNeuron


@dataclass
class Thresholds:
    """Per-site thresholds for one rule and T; what `convert` consumes."""

    fingerprint: str
    rule: str
    T: int
    params: dict
    sites: dict[str, dict]

    def save(self, path) -> None:
        files.save("thresholds", {"rule": self.rule, "T": self.T, "params": self.params, "sites": self.sites},
                   self.fingerprint, path)

    @classmethod
    def load(cls, path, fingerprint: str | None = None) -> Thresholds:
        data = files.load("thresholds", path, fingerprint)
        return cls(data["model_fingerprint"], data["rule"], data["T"], data["params"], data["sites"])


@dataclass
class CalibrationStats:
    """What observers saw at each activation call site, plus where the inputs came from."""

    fingerprint: str
    sites: dict[str, dict]
    source: dict = field(default_factory=dict)

    def save(self, path) -> None:
        files.save("calibration-stats", {"source": self.source, "sites": self.sites}, self.fingerprint, path)

    @classmethod
    def load(cls, path, fingerprint: str | None = None) -> CalibrationStats:
        data = files.load("calibration-stats", path, fingerprint)
        return cls(data["model_fingerprint"], data["sites"], data.get("source", {}))

    def thresholds(self, rule: str, *, T: int, percentile: float = 99.9, v_init: float = 0.5,
                   per_channel: bool = False, signed: bool = True) -> Thresholds:
        params = {"percentile": percentile, "v_init": v_init, "per_channel": per_channel, "signed": signed}
        sites = {}
        for name, site_stats in self.sites.items():
            sites[name] = site_thresholds({"name": name, **site_stats}, rule, T=T, **params)
        return Thresholds(self.fingerprint, rule, T, params if rule == "percentile" else
                          {k: v for k, v in params.items() if k != "percentile"}, sites)


class ObservedModel(nn.Module):
    """The model's graph with an `ActivationObserver` after every activation call on the image path."""

    def __init__(self, model: nn.Module, graph: fx.GraphModule, sites: list[ActivationSite], per_channel: bool):
        super().__init__()
        self.graph, self.sites, self.per_channel = graph, sites, per_channel
        self.model_config = dict(model.config)
        self.model = [model]  # the float model, kept out of the module tree so it is not saved twice
        self.batches = 0

    @property
    def fingerprint(self) -> str:
        return files.model_fingerprint(self.model_config)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        return self.graph(sample, timestep)

    def observers(self) -> dict[str, ActivationObserver]:
        return {m.name: m for m in self.graph.modules() if isinstance(m, ActivationObserver)}

    def stats(self, source: dict | None = None) -> CalibrationStats:
        if self.batches == 0:
            raise SDMError("no calibration inputs were run through the observed model; call calibrate() first")
        return CalibrationStats(self.fingerprint, {n: o.summary() for n, o in self.observers().items()}, source or {})


def require_ann(model: nn.Module, name: str = "the model") -> None:
    """Conversion starts from an ANN: a model with spiking neurons (trained or converted) spikes already."""
    if any(isinstance(m, SpikingNeuron) for m in model.modules()):
        raise SDMError(f"{name} is already a spiking model ({type(model).__name__}); calibrate and convert the ANN "
                       "(a UNet2DModel) instead")


def prepare(model: nn.Module, per_channel: bool = False, encode_analog: bool = False) -> ObservedModel:
    """Capture `model` as a graph and insert an observer after each activation call site (and, with
    `encode_analog`, after each analog input of a synaptic layer)."""
    require_ann(model)
    graph = capture(model)
    sites = conversion_sites(graph, encode_analog)
    if not any(site.op != "identity" for site in sites):
        raise SDMError(f"{type(model).__name__} has no ReLU, SiLU or GELU on its image path: nothing to convert")
    by_node = {s.node: s for s in sites}
    for index, node in enumerate(list(graph.graph.nodes)):
        site = by_node.get(node.name)
        if site is None:
            continue
        attr = f"observer_{index}"
        graph.add_submodule(attr, ActivationObserver(site.name, site.op, per_channel, seed=index))
        with graph.graph.inserting_after(node):
            observed = graph.graph.call_module(attr, (node,))
        node.replace_all_uses_with(observed, delete_user_cb=lambda user, o=observed: user is not o)
    graph.recompile()
    return ObservedModel(model, graph, sites, per_channel)


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
    loaded = CalibrationStats.load(path, files.model_fingerprint(dict(model.config)))
    graph = capture(model)
    encoders = any(name.endswith(":input") or ":input." in name for name in loaded.sites)
    files.check_sites(list(loaded.sites), [s.name for s in conversion_sites(graph, encoders)], f"statistics in '{path}'")
    return loaded
