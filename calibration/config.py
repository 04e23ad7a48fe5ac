"""ConversionConfig: everything a conversion is configured by, given once at `prepare()`.

As in PyTorch FX quantization, where the qconfig given to `prepare_fx` is what `convert_fx` reads,
the configuration travels with the workflow: `prepare(model, config)` records it on the observed
model, `calibrate` carries it into the statistics (and their file), `convert` builds the network it
describes, and the `ConvertedUNet` keeps it in its config. Each default and each check lives here,
and the command-line options are declared on the fields (`sdm.settings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import click
import torch

from calibration.rules import RULES
from sdm.errors import ConfigError
from sdm.settings import CommaList, nested, option
from sdm.snn.coding import CODINGS, SpikeCode
from sdm.snn.neurons import NEURONS, SpikingNeuron
from sdm.snn.temporal import ANALOG_MODES, READOUTS, SMOOTH_TRANSFERS

RESETS = ("subtract", "value")


@dataclass(frozen=True)
class NeuronConfig:
    """How every converted activation spikes."""

    kind: str = field(default="if", metadata=option("--neuron", type=click.Choice(list(NEURONS))))
    tau: float = field(default=2.0, metadata=option("--tau", "LIF time constant.",
                                                    type=click.FloatRange(min=1, min_open=True)))
    v_init: float = field(default=0.5, metadata=option(
        "--v-init", "Initial membrane potential, as a fraction of the threshold (0.5: spike counts round).",
        type=click.FloatRange(0, 1, max_open=True)))
    reset: str = "subtract"
    signed: bool = field(default=True, metadata=option("--signed/--unsigned", "Allow negative spikes."))

    def validate(self) -> None:
        if self.kind not in NEURONS:
            raise ConfigError("kind", f"'{self.kind}' is unknown: choose one of {', '.join(NEURONS)}")
        if not 0.0 <= self.v_init < 1.0:
            raise ConfigError("v_init", f"must lie in [0, 1), got {self.v_init}")
        if self.kind == "lif" and not self.tau > 1.0:
            raise ConfigError("tau", f"must exceed 1 (tau = 1 forgets everything each step), got {self.tau}")
        if self.reset not in RESETS:
            raise ConfigError("reset", f"'{self.reset}' is unknown: choose one of {', '.join(RESETS)}")

    def make(self, threshold, neg_threshold, signed: bool | None = None) -> SpikingNeuron:
        extra = {"tau": self.tau} if self.kind == "lif" else {}
        signed = self.signed if signed is None else signed
        neg = neg_threshold if signed else 0.0
        return NEURONS[self.kind](torch.as_tensor(threshold), neg_threshold=torch.as_tensor(neg), signed=signed,
                                  v_init=self.v_init, reset=self.reset, **extra)


# Fields that only decide the thresholds calibration sets (a converted model holds the thresholds
# themselves, so these say how they were found, not how the model computes).
THRESHOLD_ONLY = ("rule", "percentile", "per_channel")


@dataclass(frozen=True)
class ConversionConfig:
    """A conversion of an ANN into a spiking network over T steps.

    `per_channel` and the encoder sites decide what calibration observes; the rest decides what
    conversion builds from it, so statistics serve several conversions (`CalibrationStats.retarget`).
    """

    T: int = field(default=4, metadata=option("--T", "Spiking steps.", type=click.IntRange(min=1)))
    # The weighted code is the default: at the same T it carries more levels for fewer spikes, and drew
    # better samples at lower energy on every model tried (BENCHMARKS.md 10.6).
    coding: str = field(default="weighted", metadata=option(
        "--coding", "How the T steps carry a value: weighted (step k's spike worth theta 2^(T-1-k) / (2^T - 1): "
        "2^(T+1) - 1 levels for popcount spikes; IF neurons, window mode, T <= 24) or rate (every spike worth "
        "theta / T: 2T + 1 levels).", type=click.Choice(CODINGS)))
    rule: str = field(default="mse", metadata=option("--calib", "Threshold rule.", type=click.Choice(RULES)))
    percentile: float = field(default=99.9, metadata=option(
        "--percentile", "Percentile of the percentile rule.", type=click.FloatRange(0, 100, min_open=True)))
    # Per-channel thresholds are the default: 3-13 % lower FID for 1.5-2.1 % more energy on every model
    # tried, in both codes (BENCHMARKS.md 10.6).
    per_channel: bool = field(default=True, metadata=option(
        "--per-channel/--per-site", "One threshold per channel, or one per activation call site."))
    neuron: NeuronConfig = field(default_factory=NeuronConfig, metadata=nested())
    analog_mode: str = field(default="window", metadata=option(
        "--analog", "How GroupNorm, attention and smooth activations meet spikes: window (layer-synchronous) or "
        "running (causal running means).", type=click.Choice(ANALOG_MODES)))
    encode_analog: bool = field(default=False, metadata=option(
        "--encode-analog", "Also spike-encode the analog inputs of synaptic layers (shortcuts, down/up-sampling, "
        "attention projections): every synaptic layer but the first then accumulates instead of multiplying.",
        is_flag=True))
    encode_sites: tuple[str, ...] = field(default=(), metadata=option(
        "--encode-sites", "Comma-separated shell patterns of the analog inputs to spike-encode (e.g. "
        "'up_blocks.1.upsamplers.0.conv:input'); implies --encode-analog for these only.", type=CommaList()))
    activation: str = field(default="function", metadata=option(
        "--activation", "function: smooth activations are evaluated on the mean input, then spike-encoded; neuron: "
        "the IF neuron's own transfer replaces them, so no activation stays analog (fine-tune afterwards).",
        type=click.Choice(SMOOTH_TRANSFERS)))
    readout: str = field(default="analog", metadata=option(
        "--readout", "analog: the activation feeding the output layer stays analog, so the output layer reads real "
        "values (its MACs are counted); spikes: it spikes too.", type=click.Choice(READOUTS)))
    analog_sites: tuple[str, ...] = field(default=(), metadata=option(
        "--analog-sites", "Comma-separated shell patterns of activation sites to keep analog (their layers count "
        "MACs).", type=CommaList()))

    def __post_init__(self):
        for name in ("encode_sites", "analog_sites"):  # lists from JSON or the command line
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        if isinstance(self.encode_analog, (list, tuple)):  # records before encode_sites: the patterns themselves
            object.__setattr__(self, "encode_sites", tuple(self.encode_analog))
            object.__setattr__(self, "encode_analog", False)
        if isinstance(self.neuron, dict):
            object.__setattr__(self, "neuron", NeuronConfig(**self.neuron))

    @property
    def code(self) -> SpikeCode:
        """The spike code the network runs (`sdm.snn.coding`)."""
        return SpikeCode(self.coding, self.T)

    @property
    def encodes(self) -> bool:
        """Whether any analog input of a synaptic layer is spike-encoded (all, or the `encode_sites`)."""
        return self.encode_analog or bool(self.encode_sites)

    def validate(self) -> None:
        if not isinstance(self.T, int) or self.T < 1:
            raise ConfigError("T", f"must be an integer of at least 1, got {self.T}")
        if self.rule not in RULES:
            raise ConfigError("rule", f"'{self.rule}' is unknown: choose one of {', '.join(RULES)}")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError("percentile", f"must lie in (0, 100], got {self.percentile}")
        self.neuron.validate()
        self._validate_coding()
        for name, value, choices in (("analog_mode", self.analog_mode, ANALOG_MODES),
                                     ("activation", self.activation, SMOOTH_TRANSFERS),
                                     ("readout", self.readout, READOUTS)):
            if value not in choices:
                raise ConfigError(name, f"'{value}' is unknown: choose one of {', '.join(choices)}")

    def _validate_coding(self) -> None:
        """The weighted code is a window code of integrate-and-fire neurons: its neuron holds one drive
        for the window and halves its threshold each step, which a leak or a causal running mean breaks."""
        self.code  # noqa: B018 (the code checks its own name and T)
        if self.coding != "weighted":
            return
        if self.neuron.kind != "if":
            raise ConfigError("coding", f"weighted needs IF neurons (a leak has no meaning in a code whose thresholds "
                              f"halve each step), not {self.neuron.kind}: use --neuron if, or --coding rate")
        if self.analog_mode != "window":
            raise ConfigError("coding", "weighted needs --analog window (a neuron reads its whole window before "
                              "spelling it in bits); use --coding rate for running mode")

    def replace(self, **changes) -> ConversionConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able: what statistics files and converted models record."""
        return dataclasses.asdict(self) | {"encode_sites": list(self.encode_sites),
                                           "analog_sites": list(self.analog_sites)}

    @classmethod
    def from_dict(cls, data: dict) -> ConversionConfig:
        """From `to_dict`'s output; keys it does not know are left out (a record holds more). A record
        without a spike code predates the weighted code: it was a rate code, whatever the default is now."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"coding": "rate", **{k: v for k, v in data.items() if k in names}})

    def differences(self, other: ConversionConfig) -> list[str]:
        """Names of the fields whose values differ from `other`'s."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]
