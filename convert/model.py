"""ConvertedUNet: a UNet2DModel run as a spiking network, with UNet2DModel's call signature.

Saved as `config.json` (the ANN's config, T, neuron settings and every threshold, readable) plus
`diffusion_pytorch_model.safetensors`; loading rebuilds the graph from the config with the same pass,
so nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from calibration.stats import check_sites, model_fingerprint
from convert.passes import spiking_graph
from sdm.errors import SDMError
from sdm.graph import ActivationSite, capture, conversion_sites, readout_sites
from sdm.io import atomic_dir, write_json
from sdm.neurons import NEURONS, SpikingNeuron, reset_neurons
from sdm.temporal import SpikingActivation, use_rate_form

WEIGHTS = "diffusion_pytorch_model.safetensors"
EXECUTORS = ("steps", "rate")
STEP_ROWS_CPU = 64
READOUTS = ("analog", "spikes")


def match_sites(patterns: list[str], names: list[str], flag: str = "--analog-sites") -> list[str]:
    """Site names matched by shell-style `patterns`; a pattern that matches nothing is an error."""
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise SDMError(f"{flag} pattern '{pattern}' matches no site (they are named like "
                           f"'{names[0]}'; sdm-convert's report.json lists them all)")
        chosen += [n for n in hits if n not in chosen]
    return chosen


@dataclass(frozen=True)
class NeuronConfig:
    """How every converted activation spikes."""

    kind: str = "if"            # if | lif
    tau: float = 2.0            # lif only
    v_init: float = 0.5         # initial potential, fraction of the threshold
    reset: str = "subtract"     # subtract | value
    signed: bool = True         # negative spikes where the activation goes negative

    def validate(self) -> None:
        if self.kind not in NEURONS:
            raise SDMError(f"unknown neuron '{self.kind}': choose one of {', '.join(NEURONS)}")
        if not 0.0 <= self.v_init < 1.0:
            raise SDMError(f"v_init must lie in [0, 1), got {self.v_init}")

    def make(self, threshold, neg_threshold, signed: bool | None = None) -> SpikingNeuron:
        extra = {"tau": self.tau} if self.kind == "lif" else {}
        signed = self.signed if signed is None else signed
        neg = neg_threshold if signed else 0.0
        return NEURONS[self.kind](torch.as_tensor(threshold), neg_threshold=torch.as_tensor(neg), signed=signed,
                                  v_init=self.v_init, reset=self.reset, **extra)


class ConvertedUNet(nn.Module):
    """The spiking counterpart of a UNet2DModel. Build it with `convert.convert`."""

    def __init__(self, unet_config: dict, T: int, neuron: dict | NeuronConfig, thresholds: dict[str, dict],
                 unet: nn.Module | None = None, source: dict | None = None, analog_mode: str = "window",
                 encode_analog: bool | list[str] | tuple[str, ...] = False, activation: str = "function",
                 readout: str = "analog", analog_sites: list[str] | tuple[str, ...] = ()):
        """`encode_analog`: spike-encode the analog inputs of synaptic layers, every one (True) or those
        whose encoder site (`LAYER:input`) matches one of its shell patterns; the others stay analog,
        window-accumulated."""
        super().__init__()
        from diffusers import UNet2DModel
        from diffusers.configuration_utils import FrozenDict

        neuron = neuron if isinstance(neuron, NeuronConfig) else NeuronConfig(**neuron)
        neuron.validate()
        if not isinstance(T, int) or T < 1:
            raise SDMError(f"--T must be an integer of at least 1, got {T}")
        unet_config = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
        # The export shares the module's parameters: a copy keeps the SNN's weights its own, so that
        # moving, casting or training it leaves the ANN it came from untouched.
        unet = copy.deepcopy(unet) if unet is not None else UNet2DModel.from_config(unet_config)
        captured = capture(unet)
        patterns = list(encode_analog) if isinstance(encode_analog, (list, tuple)) else []
        encode_analog = patterns or bool(encode_analog)
        sites = conversion_sites(captured, bool(encode_analog))
        if encode_analog and not any(s.op == "identity" and s.name in thresholds for s in sites):
            raise SDMError("the calibration has no spike-encoder sites: calibrate with --encode-analog")
        if patterns:
            encoders = match_sites(patterns, [s.name for s in sites if s.op == "identity"], "--encode-sites")
            sites = [s for s in sites if s.op != "identity" or s.name in encoders]
            thresholds = {name: th for name, th in thresholds.items() if ":input" not in name or name in encoders}
        check_sites(list(thresholds), [s.name for s in sites], "the thresholds")

        def make(site: ActivationSite) -> SpikingNeuron:
            th = thresholds[site.name]  # encoders carry the analog stream, which has both signs
            return neuron.make(th["threshold"], th["neg_threshold"], signed=True if site.op == "identity" else None)

        if readout not in READOUTS:
            raise SDMError(f"unknown readout '{readout}': choose one of {', '.join(READOUTS)}")
        kept = match_sites(list(analog_sites), [s.name for s in sites])
        if readout == "analog":
            kept += [name for name in readout_sites(captured, sites) if name not in kept]
        self.graph, self.summary = spiking_graph(captured, sites, make, T, analog_mode, activation, frozenset(kept))
        self.T, self.neuron_config, self.thresholds, self.analog_mode = T, neuron, thresholds, analog_mode
        self.encode_analog = encode_analog
        self.executor = "steps"
        self.set_executor(self.default_executor)
        self.unet_config, self.source = unet_config, source or {}
        self.config = FrozenDict(
            _class_name=type(self).__name__, sample_size=unet_config["sample_size"],
            in_channels=unet_config["in_channels"], out_channels=unet_config["out_channels"], T=T,
            neuron=asdict(neuron), analog_mode=analog_mode, encode_analog=encode_analog, activation=activation,
            readout=readout, analog_sites=list(analog_sites), model_fingerprint=model_fingerprint(unet_config),
        )

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
        """Per-layer activity of one forward pass, for `sdm.energy.energy_report`."""
        from convert.report import layer_activity

        return layer_activity(self, sample, timestep)

    def reset_state(self) -> None:
        reset_neurons(self)

    @property
    def default_executor(self) -> str:
        """The exact rate form wherever it exists (window mode), else step-by-step simulation."""
        return "rate" if self.analog_mode == "window" else "steps"

    def set_executor(self, executor: str) -> None:
        """'steps' simulates every spiking step; 'rate' evaluates a window-mode graph in its exact rate
        form, T times faster (see `sdm.temporal.use_rate_form`)."""
        if executor not in EXECUTORS:
            raise SDMError(f"unknown executor '{executor}': choose one of {', '.join(EXECUTORS)}")
        if executor == "rate" and self.analog_mode != "window":
            raise SDMError("--executor rate needs --analog window (running-mode graphs must be simulated step by step)")
        use_rate_form(self, executor == "rate")
        self.executor = executor

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
        try:
            config = json.loads((directory / "config.json").read_text())
            model = cls(config["unet_config"], config["T"], config["neuron"], config["thresholds"],
                        source=config.get("source"), analog_mode=config["analog_mode"],
                        encode_analog=config.get("encode_analog", False),
                        activation=config.get("activation", "function"), readout=config.get("readout", "spikes"),
                        analog_sites=config.get("analog_sites", ()))
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise SDMError(f"'{directory}' is not a saved ConvertedUNet ({type(err).__name__}: {err})") from None
        try:
            model.load_state_dict(load_file(directory / WEIGHTS))
        except (OSError, RuntimeError) as err:
            raise SDMError(f"the weights in '{directory}' do not fit its config ({str(err).splitlines()[0][:160]})") from None
        return model.to(torch_dtype) if torch_dtype is not None else model
