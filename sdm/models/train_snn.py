"""Direct training of the spiking UNet: surrogate-gradient BPTT, pre-spike stage then TSM stage."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.training import read_run_config, train_diffusion
from sdm.errors import ConfigError
from sdm.models.pretrained import locate, resolve_checkpoint
from sdm.models.spiking_unet import SPIKING_PRESETS, SpikingUNet
from sdm.settings import option
from sdm.snn.neurons import NEURONS
from sdm.snn.temporal import READOUTS

STAGES = ("prespike", "tsm")
DEFAULT_PRESET = "fmnist-small"
UNET = {name: p.default for name, p in inspect.signature(SpikingUNet.__init__).parameters.items()}
DEFAULT_READOUT = "analog"  # what direct training builds (the class's own default, spikes, is older files')


@dataclass
class SNNTrainConfig(TrainSettings):
    """A direct-training run: the shared settings plus the spiking UNet's; the TSM stage inherits its
    parent's architecture, T and readout (None: the parent's, or the defaults for a pre-spike run)."""

    preset: str | None = field(default=None, metadata=option(
        "--preset", f"Architecture [default: {DEFAULT_PRESET}; TSM: the parent's, which a --preset must match].",
        type=click.Choice(list(SPIKING_PRESETS))))
    T: int | None = field(default=None, metadata=option(
        "--T", f"Spiking steps [default: {UNET['T']}; TSM: the parent's].", type=click.IntRange(min=1)))
    neuron: str = field(default=UNET["neuron"], metadata=option("--neuron", type=click.Choice(list(NEURONS))))
    readout: str | None = field(default=None, metadata=option(
        "--readout", f"What the output layer reads: the analog residual stream or the last spikes [default: "
        f"{DEFAULT_READOUT}; TSM: the parent's].", type=click.Choice(list(READOUTS))))
    stage: str = field(default="prespike", metadata=option("--stage", type=click.Choice(STAGES)))
    init_from: str | None = field(default=None, metadata=option("--init-from",
                                                                "The pre-spike run the TSM stage starts from."))

    def validate(self) -> None:
        super().validate()
        if self.preset is not None and self.preset not in SPIKING_PRESETS:
            raise ConfigError("preset", f"'{self.preset}' is unknown: choose one of {', '.join(SPIKING_PRESETS)}")
        if self.stage not in STAGES:
            raise ConfigError("stage", f"'{self.stage}' is unknown: choose prespike or tsm")
        if self.stage == "tsm" and self.init_from is None:
            raise ConfigError("init_from", "is needed by the TSM stage: the pre-spike run it fine-tunes")
        if self.T is not None and self.T < 1:
            raise ConfigError("T", f"must be at least 1, got {self.T}")


def train_snn(config: SNNTrainConfig, *, resume: bool = False, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None, report: Callable[[str], None] = print) -> Path:
    """Train a SpikingUNet; the TSM stage starts from the pre-spike weights in `config.init_from`."""
    config.validate()
    if config.stage == "tsm":
        parent_dir = locate(resolve_checkpoint(config.init_from))[0]
        child, new = SpikingUNet.from_prespike(parent_dir)
        if config.T is not None and config.T != child.config.T:
            raise ConfigError("T", f"{config.T} differs from the pre-spike model's T = {child.config.T}")
        model_config = dict(child.config)
        preset = _parent_preset(Path(config.init_from))
        _check_preset(config.preset, preset, model_config)
        if config.readout is not None and config.readout != child.config.readout:
            raise ConfigError("readout", f"{config.readout} differs from the pre-spike model's readout "
                              f"({child.config.readout}); the TSM stage keeps its parent's: drop it")
        report(f"TSM stage from {parent_dir}: every inherited weight copied by name; {len(new)} new parameters "
               f"({len(new) * child.config.T} factors p_t, all 1.0): {', '.join(new[:3])}{', ...' if len(new) > 3 else ''}")

        def build():
            return SpikingUNet.from_config(model_config)

        def initialise(model):
            model.load_state_dict(child.state_dict())
    else:
        preset = config.preset or DEFAULT_PRESET
        model_config = {**SPIKING_PRESETS[preset], "T": config.T or UNET["T"], "neuron": config.neuron,
                        "readout": config.readout or DEFAULT_READOUT}

        def build():
            return SpikingUNet(**model_config)

        initialise = None
    settings = {"preset": preset, "stage": config.stage, "init_from": config.init_from,
                "T": model_config["T"], "neuron": model_config["neuron"], "readout": model_config["readout"]}
    return train_diffusion(config, settings, build, initialise=initialise, resume=resume, progress=progress,
                           on_step=on_step)


def _parent_preset(run: Path) -> str | None:
    """The preset a TSM model inherits: its pre-spike run's, when that run recorded one."""
    return (read_run_config(run) or {}).get("model", {}).get("preset")


def _check_preset(asked: str | None, inherited: str | None, model_config: dict) -> None:
    """The TSM stage's architecture is its parent's: a --preset that builds another one is refused."""
    if asked is None or asked == inherited:
        return

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    differs = [k for k, v in SPIKING_PRESETS[asked].items() if plain(v) != plain(model_config.get(k))]
    if inherited is not None or differs:
        found = f"preset {inherited}" if inherited else f"different {', '.join(differs[:3])}"
        raise ConfigError("preset", f"{asked} disagrees with the pre-spike model it starts from ({found}); the TSM "
                          "stage keeps its parent's architecture: drop it")
