"""Direct training of the spiking UNet: surrogate-gradient BPTT, pre-spike stage then TSM stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.training import read_run_config, train_diffusion
from sdm.errors import ConfigError, SDMError
from sdm.models.pretrained import locate, resolve_checkpoint
from sdm.models.spiking_unet import SPIKING_PRESETS, SpikingUNet

STAGES = ("prespike", "tsm")
DEFAULT_PRESET = "fmnist-small"


@dataclass
class SNNTrainConfig(TrainSettings):
    preset: str | None = None       # default: fmnist-small; the TSM stage inherits its parent's
    T: int | None = None            # default: 4, or the parent's T in the TSM stage
    neuron: str = "lif"
    readout: str | None = None      # default: analog; the TSM stage inherits its parent's
    stage: str = "prespike"
    init_from: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.preset is not None and self.preset not in SPIKING_PRESETS:
            raise SDMError(f"unknown preset '{self.preset}': choose one of {', '.join(SPIKING_PRESETS)}")
        if self.stage not in STAGES:
            raise SDMError(f"unknown stage '{self.stage}': choose prespike or tsm")
        if self.stage == "tsm" and self.init_from is None:
            raise SDMError("--stage tsm fine-tunes a pre-spike model: pass --init-from DIR (a pre-spike run)")
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
            raise SDMError(f"--readout {config.readout} differs from the pre-spike model's readout "
                           f"({child.config.readout}); the TSM stage keeps its parent's: drop --readout")
        report(f"TSM stage from {parent_dir}: every inherited weight copied by name; {len(new)} new parameters "
               f"({len(new) * child.config.T} factors p_t, all 1.0): {', '.join(new[:3])}{', ...' if len(new) > 3 else ''}")

        def build():
            return SpikingUNet.from_config(model_config)

        def initialise(model):
            model.load_state_dict(child.state_dict())
    else:
        preset = config.preset or DEFAULT_PRESET
        model_config = {**SPIKING_PRESETS[preset], "T": config.T or 4, "neuron": config.neuron,
                        "readout": config.readout or "analog"}

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
        raise SDMError(f"--preset {asked} disagrees with the pre-spike model in --init-from ({found}); the TSM "
                       "stage keeps its parent's architecture: drop --preset")
