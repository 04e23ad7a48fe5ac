"""ConvertedUNet: a UNet2DModel run as a spiking network, with UNet2DModel's call signature.

Its diffusers config (`register_to_config`) holds the `ConversionConfig` it was built by. Saved as
`config.json` (that config, the ANN's config and every threshold, readable) plus
`diffusion_pytorch_model.safetensors`; loading rebuilds the graph from the config with the same pass,
so nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import calibration.graph as unet_graph
from calibration.config import THRESHOLD_ONLY, ConversionConfig
from convert.accounting import layer_activity
from convert.passes import spiking_graph
from sdm.errors import ConfigError, SDMError, reason
from sdm.io import atomic_dir, write_json
from sdm.snn.modes import assigned
from sdm.snn.neurons import SpikingNeuron, reset_neurons
from sdm.snn.temporal import Folded, SpikingActivation

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXECUTORS = ("steps", "rate")
STEP_ROWS_CPU = 64


class ConvertedUNet(nn.Module, ConfigMixin):
    """The spiking counterpart of a UNet2DModel. Build it with `convert.convert`."""

    config_name = "config.json"

    def __init__(self, unet_config: dict, config: ConversionConfig, thresholds: dict[str, dict],
                 unet: nn.Module | None = None, source: dict | None = None):
        """`config.encode_sites` spike-encodes the analog inputs of synaptic layers whose encoder site
        (`LAYER:input`) matches one of its shell patterns (`encode_analog`: every one); the others stay
        analog, window-accumulated."""
        super().__init__()
        from diffusers import UNet2DModel

        config.validate()
        unet_config = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
        # The export shares the module's parameters: a copy keeps the SNN's weights its own, so that
        # moving, casting or training it leaves the ANN it came from untouched.
        unet = copy.deepcopy(unet) if unet is not None else UNet2DModel.from_config(unet_config)
        captured = unet_graph.capture(unet)
        sites = unet_graph.conversion_sites(captured, config.encodes)
        if config.encodes and not any(s.is_encoder and s.name in thresholds for s in sites):
            raise ConfigError("encode_analog", "needs spike-encoder sites in the calibration: calibrate with encoders")
        if config.encode_sites:
            encoders = unet_graph.match_sites(list(config.encode_sites),
                                              [s.name for s in sites if s.is_encoder], "encode_sites")
            sites = [s for s in sites if not s.is_encoder or s.name in encoders]
            thresholds = {name: th for name, th in thresholds.items() if not unet_graph.is_encoder_site(name) or name in encoders}
        unet_graph.check_sites(list(thresholds), [s.name for s in sites], "the thresholds")

        def make(site: unet_graph.ConversionSite) -> SpikingNeuron:
            th = thresholds[site.name]  # encoders carry the analog stream, which has both signs
            return config.neuron.make(th["threshold"], th["neg_threshold"],
                                      signed=True if site.is_encoder else None)

        kept = unet_graph.match_sites(list(config.analog_sites), [s.name for s in sites])
        if config.readout == "analog":
            kept += [name for name in unet_graph.readout_sites(captured, sites) if name not in kept]
        self.graph, self.summary = spiking_graph(captured, sites, make, config, frozenset(kept))
        self.conversion, self.thresholds, self.unet_config, self.source = config, thresholds, unet_config, source or {}
        self.set_executor(self.default_executor)
        self.register_to_config(_class_name=type(self).__name__, sample_size=unet_config["sample_size"],
                                in_channels=unet_config["in_channels"], out_channels=unet_config["out_channels"],
                                **config.to_dict(), architecture_fingerprint=unet_graph.architecture_fingerprint(unet_config))

    def output_config(self) -> dict:
        """The config entries that decide this model's outputs, given its weights and thresholds: the
        sample cache's key (`sdm.diffusion.shards`), so that a record of how the thresholds were found
        can change without redrawing samples that would come out the same."""
        return {k: v for k, v in dict(self.config).items() if not k.startswith("_") and k not in THRESHOLD_ONLY}

    @property
    def T(self) -> int:
        return self.conversion.T

    @property
    def analog_mode(self) -> str:
        return self.conversion.analog_mode

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _apply(self, fn, recurse: bool = True):
        """`.to()`, `.double()`, `.cuda()`: the exported graph carries the dtype and device the ANN had
        when it was captured (its timestep embedding builds a float32 `arange` on that device and casts
        to float32), so they follow the weights here, as diffusers' eager code follows `self.dtype`."""
        module = super()._apply(fn, recurse)
        dtype, device = self.dtype, self.device
        for node in self.graph.graph.nodes:
            node.args = tuple(dtype if isinstance(a, torch.dtype) and a.is_floating_point else a for a in node.args)
            if isinstance(node.kwargs.get("dtype"), torch.dtype) and node.kwargs["dtype"].is_floating_point:
                node.update_kwarg("dtype", dtype)
            if "device" in node.kwargs:
                node.update_kwarg("device", device)
        self.graph.recompile()
        return module

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def neurons(self) -> dict[str, SpikingNeuron]:
        """Call site -> neuron."""
        return {site: activation.neuron for site, activation in self.sites().items()}

    def sites(self) -> dict[str, SpikingActivation]:
        """Call site -> its `SpikingActivation` (spiking or kept analog)."""
        modules = dict(self.graph.named_modules())
        return {site: modules[path] for site, path in self.summary.neurons.items()}

    def spiking_sites(self) -> list[str]:
        """The sites that spike (those kept analog left out)."""
        return [site for site, activation in self.sites().items() if activation.spiking]

    def analog_twin(self) -> ConvertedUNet:
        """A frozen copy with every site analog: the ANN this SNN approximates, computed by the same graph,
        so that each of the SNN's sites has the ANN's value at the same position (feature distillation)."""
        twin = copy.deepcopy(self).requires_grad_(False)
        for activation in twin.sites().values():
            activation.transfer = "analog"
        return twin

    def current_thresholds(self) -> dict[str, dict]:
        """Every site's thresholds as the neurons hold them now (after fine-tuning, the learnt ones)."""
        def plain(value: torch.Tensor):
            value = value.detach().cpu().double()
            return value.item() if value.numel() == 1 else value.flatten().tolist()

        return {site: {"threshold": plain(n.threshold), "neg_threshold": plain(n.neg_threshold)}
                for site, n in self.neurons().items()}

    def layer_activity(self, sample: torch.Tensor, timestep: torch.Tensor):
        """Per-layer activity of one forward pass, for `sdm.snn.energy.energy_report`."""
        return layer_activity(self, sample, timestep)

    def reset_state(self) -> None:
        reset_neurons(self)

    @property
    def default_executor(self) -> str:
        """The exact rate form wherever it exists (window mode), else step-by-step simulation."""
        return "rate" if self.analog_mode == "window" else "steps"

    def _check_executor(self, executor: str) -> None:
        if executor not in EXECUTORS:
            raise ConfigError("executor", f"'{executor}' is unknown: choose one of {', '.join(EXECUTORS)}")
        if executor == "rate" and self.analog_mode != "window":
            raise ConfigError("executor", "rate needs window mode (running-mode graphs must be simulated step by step)")

    def set_executor(self, executor: str) -> None:
        """How this model runs from now on (as `.eval()` says how it behaves): 'steps' simulates every
        spiking step; 'rate' evaluates a window-mode graph in its exact rate form, T times faster (see
        `sdm.snn.temporal.Folded`). For a block of code, use `executing`."""
        self._check_executor(executor)
        for module in self._folded():
            module.rate = executor == "rate"
        self.executor = executor

    @contextlib.contextmanager
    def executing(self, executor: str) -> Iterator[ConvertedUNet]:
        """Run with `executor` inside the block, with the model's own executor again after it."""
        self._check_executor(executor)
        with assigned(self._folded(), "rate", executor == "rate"), assigned([self], "executor", executor):
            yield self

    def _folded(self) -> list[Folded]:
        """The graph's modules that run T steps folded into the batch, or once in the rate form."""
        return [m for m in self.graph.modules() if isinstance(m, Folded)]

    @contextlib.contextmanager
    def spiking_only(self, site: str) -> Iterator[ConvertedUNet]:
        """Every site but `site` analog inside the block: where that one site's conversion error sits."""
        others = [activation for name, activation in self.sites().items() if name != site]
        with assigned(others, "transfer", "analog"):
            yield self

    def forward(self, sample: torch.Tensor, timestep, class_labels=None, return_dict: bool = True):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        if class_labels is not None:
            raise SDMError("class-conditional UNets are not supported by conversion yet")
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.dim() == 0:
            timestep = timestep.expand(sample.shape[0])
        images = self._images_per_call(sample)
        outs = [self._run(x, t) for x, t in zip(sample.split(images), timestep.split(images), strict=True)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def _images_per_call(self, sample: torch.Tensor) -> int:
        """Images per graph call. The step executor folds T steps into the batch, and on a CPU a layer's
        time per row grows with the rows once they leave the caches (2.4x at 1,024 rows against 64 for
        the embedded UNet): its calls are cut to STEP_ROWS_CPU rows, so the cost per step stays flat in T."""
        if self.executor != "steps" or sample.device.type != "cpu":
            return max(1, sample.shape[0])
        return max(1, STEP_ROWS_CPU // self.T)

    def _run(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        reset_neurons(self)
        return self.graph(sample, timestep)

    def save_pretrained(self, directory: str | os.PathLike, scheduler_config: dict | None = None, **_) -> None:
        """`directory`: config.json, the weights in safetensors and, given one, the scheduler config."""
        self.thresholds = self.current_thresholds()
        with atomic_dir(directory) as tmp:
            write_json({**dict(self.config), "unet_config": self.unet_config, "thresholds": self.thresholds,
                        "source": self.source}, tmp / "config.json")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, tmp / WEIGHTS)
            if scheduler_config is not None:
                write_json(scheduler_config, tmp / "scheduler_config.json")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = None, **_) -> ConvertedUNet:
        directory = Path(directory)
        saved = _saved_config(directory)
        model = cls(saved["unet_config"], _saved_conversion(saved), saved["thresholds"], source=saved.get("source"))
        try:
            model.load_state_dict(load_file(directory / WEIGHTS))
        except (OSError, RuntimeError, SafetensorError) as err:
            raise SDMError(f"the weights in '{directory / WEIGHTS}' are unreadable or do not fit its config "
                           f"({reason(err)}); convert again") from None
        return model.to(torch_dtype) if torch_dtype is not None else model


def _saved_config(directory: Path) -> dict:
    """The config.json of a model saved in `directory`, checked for the entries `from_pretrained` reads.
    Only reading it is guarded: a problem in building the model from it is a bug to show, not a file
    to convert again."""
    try:
        saved = json.loads((directory / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SDMError(f"'{directory}' is not a saved ConvertedUNet ({reason(err)}); convert again (sdm-convert)") from None
    missing = [k for k in ("unet_config", "thresholds") if not isinstance(saved, dict) or not isinstance(saved.get(k), dict)]
    if missing:
        raise SDMError(f"'{directory}' is not a saved ConvertedUNet (its config.json has no {' or '.join(missing)}); "
                       "convert again (sdm-convert)")
    return saved


def _saved_conversion(saved: dict) -> ConversionConfig:
    """The `ConversionConfig` of a saved model's config.json. Files written before the config existed
    keep the rule and per-channel choice in their `source` record, and their readout was the spikes."""
    source = saved.get("source") or {}
    older = {name: source[name] for name in ("rule", "per_channel") if name in source} | {"readout": "spikes"}
    return ConversionConfig.from_dict({**older, **saved})
